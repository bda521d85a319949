"""PredSim's memory switches (bench/methods/offload.py): freed gradients and optimizer states kept on the host change
how, never what, is computed (bit-identical losses and parameters on the CPU, where the host copy is a separate CPU
tensor); an offloaded optimizer's state survives a checkpoint and resume; the rule, the run's resolution and the
resource model agree (the wide ResNet-50 fits one 24 GB GPU with it)."""

import math

import pytest
import torch
from helpers import separable
from test_method_predsim import build, cfg_for

from bench import experiments as ex
from bench.cost import resources
from bench.methods import predsim
from bench.methods.checkpoint import Checkpoint
from bench.methods.offload import offload_rule
from bench.methods.training import FAULT_ENV, Context, InjectedFault

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(free_grads: bool, offloaded: bool, steps: int = 3):
    """A tiny PredSim ResNet-18 (units with a projection shortcut have two optimizers) trained `steps` batches:
    (the steps' losses, every parameter after them, the trainer)."""
    torch.manual_seed(0)
    model = build("resnet18", size=8, num_classes=4)
    ps = predsim.PredSim(model, 4, cfg_for(lr=1e-2))
    ps.use_memory(free_grads, list(range(len(ps.units))) if offloaded else [])
    ps.train()
    draw = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        x, y = torch.randn(8, 3, 8, 8, generator=draw), torch.randint(0, 4, (8,), generator=draw)
        torch.manual_seed(5)  # the same dropout masks
        r = ps.train_step(x, y)
        losses += [r.output_loss, r.sim_losses, r.pred_losses]
    return losses, [p.detach().clone() for p in list(model.parameters()) + list(ps.aux.parameters())], ps


def _unit_states(ps):
    """(optimizer, state tensor) of every unit's Adam moments."""
    return [
        (opt, t)
        for u in ps.units
        for opt in u.optimizers
        for state in opt.state.values()
        for k, t in state.items()
        if k != "step"
    ]


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


@pytest.mark.parametrize("offloaded", [False, True], ids=["grads freed", "grads freed, states offloaded"])
def test_freed_grads_and_offloaded_states_train_bit_identically(offloaded):
    ref_losses, ref_params, ref = _train(False, False)
    losses, params, ps = _train(True, offloaded)
    assert all(torch.equal(a, b) for a, b in zip(losses, ref_losses))
    assert all(torch.equal(a, b) for a, b in zip(params, ref_params))
    unit_params = [p for u, a in zip(ps.units, ps.aux) for p in u.params + u.shortcut_params + list(a.parameters())]
    assert all(p.grad is None for p in unit_params)  # freed after each unit's step
    assert ps.out_layer.weight.grad is not None  # the output layer's stays readable
    assert all(p.grad is not None for u in ref.units for p in u.params)  # without the switch: readable
    states = _unit_states(ps)
    assert len(states) == 2 * sum(len(g["params"]) for u in ps.units for o in u.optimizers for g in o.param_groups)
    if offloaded:  # between steps every moment lives in its optimizer's host copy, none in the staging buffer
        assert all(_same_storage(t, ps.offload.slots[opt].host) for opt, t in states)
        assert not any(_same_storage(t, ps.offload.staging) for _, t in states)
        assert ps.offload.staged == 0  # the first unit's states prefetched for the next batch
    else:
        assert not ps.offload.slots and ps.offload.staging is None


@pytest.mark.parametrize("writes", ["sync", "background"])
def test_offloaded_states_are_checkpointed_and_resumed(tmp_path, monkeypatch, writes):
    """predsim.train with optimizer_offload on (tiny VGG8b, 2 batches an epoch, 3 epochs), stopped inside epoch 2
    and resumed from its checkpoint: the records and weights of an uninterrupted run without offload, bit for bit;
    the restored states went back to the host copies."""
    from bench.methods import training

    data, path = separable(n_train=16, n_test=8), tmp_path / "seed0.ckpt.pt"
    made, real = [], predsim.checkpointed
    monkeypatch.setattr(predsim, "checkpointed", lambda ps, batches: made.append(ps) or real(ps, batches))

    def train_once(offload, fault=None):
        torch.manual_seed(0)
        model = build("vgg8b", size=16, num_classes=4)
        ckpt = Checkpoint(path, "test", background=writes == "background") if offload == "on" else None
        records = ckpt.records if ckpt else []
        monkeypatch.setattr(training, "_batches_seen", 0)
        if fault:
            monkeypatch.setenv(FAULT_ENV, f"raise:{fault}")
        else:
            monkeypatch.delenv(FAULT_ENV, raising=False)
        cfg = {**cfg_for(epochs=3, batch_size=8, lr=1e-3), "optimizer_offload": offload}
        try:
            predsim.train(model, data, cfg, Context(torch.device("cpu"), 0, records.append, False, ckpt))
        finally:
            if ckpt:
                ckpt.wait()
        return records, model

    ref_records, ref_model = train_once("off")
    with pytest.raises(InjectedFault):
        train_once("on", fault=3)  # inside epoch 2: epoch 1 is checkpointed
    records, model = train_once("on")
    exact = lambda d: {k: v for k, v in d.items() if not k.endswith("_s")}  # noqa: E731  times are the epochs' own
    assert [exact(r) for r in records] == [exact(r) for r in ref_records] and len(records) == 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()))
    ps = made[-1]
    assert ps.free_grads and all(_same_storage(t, ps.offload.slots[opt].host) for opt, t in _unit_states(ps))


def test_a_restored_state_goes_to_the_host_and_the_stale_prefetch_is_dropped():
    _, _, ps = _train(True, True, steps=2)
    saved = [opt.state_dict() for _, opt in ps.optimizers()]
    _, _, fresh = _train(True, True, steps=1)
    assert fresh.offload.staged == 0
    for (_, opt), state in zip(fresh.optimizers(), saved):
        opt.load_state_dict(state)
    assert fresh.offload.staged is None  # its staging buffer held the old states of unit 0
    for (opt, t), (_, want) in zip(_unit_states(fresh), _unit_states(ps)):
        assert _same_storage(t, fresh.offload.slots[opt].host) and torch.equal(t, want)


def test_the_rule():
    grads, states = [1.0, 4.0, 2.0], [2.0, 8.0, 4.0]  # all resident: 7 + 14 beside 10 of the rest, 31 in all
    assert offload_rule("auto", 31.0, 0.0, grads, states) == {"on": False, "units": [], "why": "auto: no GPU"}
    assert not offload_rule("auto", 31.0, 31.0, grads, states)["on"]
    freed = offload_rule("auto", 31.0, 28.0, grads, states)  # 31 - 7 + 4: freeing the gradients suffices
    assert freed["on"] and freed["units"] == []
    # then states offloaded the largest first, the device holding the largest offloaded one's in its staging buffer:
    # 28 - 8 + 8 = 28, 28 - 12 + 8 = 24, 28 - 14 + 8 = 22
    assert offload_rule("auto", 31.0, 27.0, grads, states)["units"] == [1, 2]
    assert offload_rule("auto", 31e9, 22e9, [g * 1e9 for g in grads], [s * 1e9 for s in states])["why"].endswith(
        "22.0 GB: fits"
    )
    short = offload_rule("auto", 31e9, 21e9, [g * 1e9 for g in grads], [s * 1e9 for s in states])
    assert short["units"] == [1, 2, 0] and short["why"].endswith("does not fit even so")
    on = offload_rule("on", 0.0, 0.0, grads, states)
    assert on == {"on": True, "units": [0, 1, 2], "why": "optimizer_offload: on"}
    assert offload_rule("off", 1e12, 1.0, grads, states) == {"on": False, "units": [], "why": "optimizer_offload: off"}


def test_a_run_applies_what_the_runner_resolved(monkeypatch):
    from bench.cost.resources import run_memory_settings

    wide = ex.get("ma-cifar10-resnet50-predsim-wide")
    on_cpu = run_memory_settings(wide, "paper", (0.0, math.inf), cpu=True)
    assert {k: v for k, v in on_cpu.items() if k.startswith("optimizer_offload")} == {
        "optimizer_offload": False,
        "optimizer_offload_units": [],
        "optimizer_offload_why": "auto: no GPU",
    }
    from bench.run import track

    tags = track.run_tags(wide, 0, "paper", [], {"optimizer_offload": True, "optimizer_offload_why": "auto: ..."}, {})
    assert tags["optimizer_offload"] is True and tags["optimizer_offload_why"] == "auto: ..."
    ps = predsim.PredSim(build("resnet18", size=8, num_classes=4), 4, cfg_for())
    names = [ps.units[3].name, ps.units[1].name]
    settings = {"optimizer_offload": True, "optimizer_offload_units": names}
    predsim.use_run_memory(ps, cfg_for(), Context(torch.device("cpu"), 0, settings=settings))
    assert ps.free_grads and ps.offload.order == [1, 3]
    predsim.use_run_memory(ps, {**cfg_for(), "optimizer_offload": "auto"}, Context(torch.device("cpu"), 0))
    assert not ps.free_grads and not ps.offload.groups  # auto without a runner's measurement: off


def test_the_wide_resnet50_fits_one_24gb_gpu_with_it():
    wide = ex.get("ma-cifar10-resnet50-predsim-wide")
    job = resources.job_resources(wide, "paper", resources.PAPERS_NODE)
    off = job["offload"]
    assert off["on"] and sorted(off["units"]) == ["block14.conv2", "block15.conv2", "block16.conv2"]
    assert job["device_bytes"] <= 24e9 and not resources.overflow(job, resources.PAPERS_NODE)
    per_unit = {n: (own + aux) * 4 * 2 for n, own, aux in resources.predsim_units(ex.config(wide, "paper"), "cifar10")}
    assert job["host"]["optimizer states (pinned)"] == sum(per_unit[n] for n in off["units"])
    assert job["device"]["optimizer states (staged)"] == max(per_unit[n] for n in off["units"])
    assert not resources.job_resources(wide, "paper", resources.Node(80e9, 64e9))["offload"]["on"]
    from bench.cost.job_cost import offload_copy_bytes

    copies = offload_copy_bytes(wide, "paper", off["units"], {"train_samples": 50_000, "stage_epochs": [400]})
    assert copies == 2 * sum(per_unit[n] for n in off["units"]) * 391 * 400


def test_offload_is_refused_with_the_compiled_step_in_one_line():
    """The runner's decision (bench.run.runner._memory_settings): where the wide ResNet-50 offloads (a 24 GB GPU,
    the free memory given here) a compiled step or CUDA graphs are refused with the reason; where it fits, they run."""
    from bench import BenchError
    from bench.cost.resources import run_memory_settings
    from bench.run.runner import _memory_settings

    wide, cuda = ex.get("ma-cifar10-resnet50-predsim-wide"), torch.device("cuda")

    def decide(free, fast):
        return _memory_settings(wide, "paper", ex.config(wide, "paper"), cuda, free, fast, run_memory_settings)

    assert decide((24e9, 64e9), {})["optimizer_offload"]
    for fast in ({"compile_step": True}, {"cuda_graphs": True}):
        with pytest.raises(BenchError, match=r"optimizer_offload \(auto: .*\) cannot run with compile_step"):
            decide((24e9, 64e9), fast)
    assert not decide((80e9, 64e9), {"compile_step": True})["optimizer_offload"]
