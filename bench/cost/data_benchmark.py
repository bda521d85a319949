"""`bench data benchmark`: training throughput (images/s) of the suite's on-device batches against the reference
torchvision DataLoader, for the same model, data and augmentation, alternating the two in one process.

Not a timed test: it prints what it measured and on which device. The model and its settings come from an
experiment's config (its dataset, augmentation, normalization, batch size, optimizer).
"""

import copy
import statistics

from bench import experiments as ex
from bench.data import load
from bench.data.loader import Batches
from bench.data.reference import reference_loader
from bench.methods.training import ce_step, make_optimizer, resolve_device, timed_steps
from bench.models import build_model


def run(
    experiment_id: str,
    profile: str = "paper",
    rounds: int = 3,
    batches: int = 20,
    workers: int = 0,
    device: str = "auto",
    width_mult: float | None = None,
    data_root=None,
    samples: int | None = 4096,
) -> dict:
    """`profile` gives the model and settings; `samples` > 0 trains on that many stand-in samples instead of the
    profile's data (no files needed)."""
    exp = ex.get(experiment_id)
    cfg = ex.config(exp, profile)
    dev = resolve_device(device)
    if width_mult is not None:
        cfg["model"]["width_mult"] = width_mult
    if samples:
        cfg["data"] = {"source": "synthetic", "train_samples": samples, "test_samples": 1}
    data = load(exp.dataset, cfg, root=data_root)
    model = build_model(
        cfg["architecture"], data.x_train.shape[1], data.num_classes, data.x_train.shape[-1], cfg["model"]
    ).to(dev)
    norm, aug, bs = cfg["normalize"], cfg["augment"], cfg["batch_size"]
    pipelines = {
        "fast (on-device batches)": lambda seed: Batches(
            data.x_train,
            data.y_train,
            bs,
            device=dev,
            mean=norm["mean"],
            std=norm["std"],
            augment=aug,
            shuffle=True,
            seed=seed,
        ),
        f"reference (DataLoader, {workers} workers)": lambda seed: reference_loader(
            data.x_train,
            data.y_train,
            bs,
            mean=norm["mean"],
            std=norm["std"],
            augment=aug,
            shuffle=True,
            seed=seed,
            num_workers=workers,
        ),
    }
    rates = {name: [] for name in pipelines}
    for r in range(rounds + 1):  # round 0 warms up both
        for name, make in pipelines.items():
            trial = copy.deepcopy(model)
            trial.train()
            images, seconds = timed_steps(
                ce_step(trial, make_optimizer(trial.parameters(), cfg)), make(r), dev, batches
            )
            if r:
                rates[name].append(images / seconds)
    from bench.run.measure import device_name

    fast, ref = (statistics.median(v) for v in rates.values())
    return {
        "experiment": experiment_id,
        "device": device_name(dev),
        "batch_size": bs,
        "batches": batches,
        "rounds": rounds,
        "images_per_s": {k: statistics.median(v) for k, v in rates.items()},
        "all_rates": rates,
        "ratio_fast_over_reference": fast / ref,
        "augment": aug,
        "data": cfg["data"]["source"],
        "width_mult": cfg["model"]["width_mult"],
    }


def describe(r: dict) -> str:
    """`run`'s result as `bench data benchmark` prints it: images/s of each pipeline and their ratio."""
    lines = [
        f"{r['experiment']} on {r['device']} ({r['data']} data, width x{r['width_mult']}, batch {r['batch_size']}, "
        f"augment {r['augment']}), median of {r['rounds']} rounds of {r['batches']} training steps:"
    ]
    lines += [f"  {name}: {rate:,.0f} images/s" for name, rate in r["images_per_s"].items()]
    return "\n".join(lines + [f"  ratio fast / reference: {r['ratio_fast_over_reference']:.2f}"])
