"""What the method tests share: tiny separable image data, a quiet CPU context, and a watch on the stages of the
sequential layer-wise methods."""

import torch

from bench.data.tensors import TensorData
from bench.methods import layerwise as lw
from bench.methods.training import Context


def separable(n_train=48, n_test=32, classes=4, size=16, seed=0, signal=0.8, shuffle=False) -> TensorData:
    """Each class a fixed random 3 x size x size pattern (weight `signal`) plus uniform noise: learnable in a few
    steps."""
    gen = torch.Generator().manual_seed(seed)
    protos = torch.rand(classes, 3, size, size, generator=gen) * 255
    noise = (1 - signal) * 255

    def split(n):
        y = torch.arange(n) % classes
        if shuffle:
            y = y[torch.randperm(n, generator=gen)]
        x = protos[y] * signal + torch.rand(n, 3, size, size, generator=gen) * noise
        return x.clamp(0, 255).to(torch.uint8), y

    return TensorData(*split(n_train), *split(n_test), classes)


def cpu_context(records=None, seed=0) -> Context:
    """A CPU Context without progress bars that appends each epoch record to `records`."""
    return Context(torch.device("cpu"), seed, (records if records is not None else []).append, False)


class Watch:
    """Wraps layerwise.new_optimizer: records every optimizer and, at every step, checks that every model parameter
    and buffer outside the stage is bit-identical, that frozen model parameters get no gradient, and that the
    frozen blocks before the trained one are in eval mode."""

    def __init__(self, model, monkeypatch):
        self.model, self.optimizers, self.steps = model, [], 0
        original = lw.new_optimizer

        def new_optimizer(params, cfg, lr):
            opt = original(params, cfg, lr)
            ids = {id(p) for p in params}
            names = {n for n, p in model.named_parameters() if id(p) in ids}
            owners = {n.rsplit(".", 1)[0] for n in names}
            before = {k: v.clone() for k, v in model.state_dict().items() if k.rsplit(".", 1)[0] not in owners}
            frozen = [p for p in model.parameters() if id(p) not in ids]
            trained_blocks = sorted({int(n.split(".")[1]) for n in names if n.startswith("blocks.")})
            self.optimizers.append(
                {
                    "names": names,
                    "params": list(params),
                    "extra": len(ids) - len(names),
                    "lr": lr,
                    "fresh": len(opt.state) == 0,
                    "opt": opt,
                }
            )
            real_step = opt.step

            def step(*a, **kw):
                assert all(p.grad is None for p in frozen)
                assert all(p.grad is not None for p in params)
                if trained_blocks:
                    assert all(not b.training for b in model.blocks[: trained_blocks[0]])
                out = real_step(*a, **kw)
                after = model.state_dict()
                for k, v in before.items():
                    assert torch.equal(after[k], v), f"{k} changed"
                self.steps += 1
                return out

            opt.step = step
            return opt

        monkeypatch.setattr(lw, "new_optimizer", new_optimizer)

    def stage_names(self):
        return [sorted({".".join(n.split(".")[:2]) for n in o["names"]}) for o in self.optimizers]


def result_file(profile: str, experiment: str, seed: int = 0, status: str = "FINISHED", metrics=None, **extra) -> dict:
    """A result file as `bench run` writes it (the keys bench.run.results checks, the experiment's resolved config)."""
    from bench import experiments as ex

    return {
        "experiment": experiment,
        "seed": seed,
        "profile": profile,
        "status": status,
        "metrics": {"test_accuracy": 50.0} if metrics is None else metrics,
        "environment": {"device": "TestGPU 9000", "code_version": "abc123", "torch": "2.x"},
        "mlflow": {"run_id": f"run-{experiment}-{seed}"},
        "config": ex.config(ex.get(experiment), profile),
        "epochs": [],
        **extra,
    }


def measurement_file(paper: str, model: str, macs: int = 5000, params_total: int = 1000) -> dict:
    """A model measurement file as `bench measure` writes it, under the paper grid's spec today, with every part a
    cell asks for (the counts are the caller's: the tests are about which files are used and how)."""
    from bench.claims.registry import load_claims
    from bench.run import deterministic as det

    spec = det.spec(paper)
    mid = det.measurement_id(paper, model)
    parts = {c.part: 10 for c in load_claims() if det.measurement_id(c.paper, c.model) == mid and c.part}
    rows = [
        {
            "name": c["name"],
            "dataset": c["dataset"],
            "input_shape": [3, 32, 32],
            "num_classes": 10,
            "params_total": params_total,
            "params_parts": parts or {"head": params_total},
            "macs": {b: macs for b in ("pytorch", "pytorch+functional", "aten")},
            "flops": {b: 2 * macs for b in ("pytorch", "pytorch+functional", "aten")},
        }
        for c in spec["conventions"]
    ]
    return {
        "id": mid,
        "paper": paper,
        "model": model,
        "primary": dict(spec["primary"]),
        "why": spec["why"],
        "conventions": rows,
        "code_version": "test",
    }
