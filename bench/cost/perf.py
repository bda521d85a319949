"""`bench perf`: training throughput of the suite's step against a plain reference loop, per model.

The suite's step: the whole dataset as uint8 on the device, batches cut, augmented and normalized there
(bench.data.loader.Batches), no host sync per batch; then, one at a time, cuDNN's autotuner (GPUs), channels_last,
bf16 autocast (GPUs with bf16) and torch.compile (--compile; on a GPU also with CUDA graphs).
The reference: a torchvision DataLoader with per-sample v2 transforms, fp32, NCHW, the same model, optimizer and loss.
Both train copies of the same model on the same stand-in data (the real shapes and augmentation), alternating in one
process, rounds after a warm-up round; images/s is the median.
A benchmark, not a timed test: it prints what it measured and where.
"""

import copy
import statistics

import torch

from bench import BenchError, methods
from bench import experiments as ex
from bench.data import load
from bench.data.loader import Batches
from bench.data.reference import reference_loader
from bench.methods.training import ce_step, compile_forward, make_optimizer, timed_steps
from bench.models import build_model
from bench.run.measure import device_name

CASES = {
    "CIFAR VGG-11": "cruciata-cifar10-vgg11-backprop",
    "CIFAR ResNet-18": "cruciata-cifar10-resnet18-backprop",
    "LeNet (Fashion-MNIST)": "karimi-fashion_mnist-lenet-backprop-sgd",
    "PredSim VGG-8b": "ma-cifar10-vgg8b-predsim",
}


def _stepper(exp, model, cfg, num_classes):
    """(module whose copies train, step(x, y)) for the experiment's method: the method's own training step where its
    module has one (`training_step`: PredSim's), else plain cross-entropy."""
    own = getattr(methods.plan_module(exp.method), "training_step", None)
    if own is not None:
        return own(model, num_classes, cfg)
    return model, ce_step(model, make_optimizer(model.parameters(), cfg))


def _rate(
    make_model, batches, device, limit, precision="fp32", channels_last=False, compiled=None, cudnn_benchmark=False
) -> float:
    model, step = make_model(channels_last, compiled or {})
    model.train()
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        images, seconds = timed_steps(step, batches, device, limit, channels_last, precision)
    finally:
        torch.backends.cudnn.benchmark = before
    return images / seconds


def measure(
    name: str,
    device: torch.device,
    width_mult: float,
    batches: int = 10,
    rounds: int = 3,
    samples: int = 2048,
    compile_: bool = False,
) -> dict:
    exp = ex.get(CASES[name])
    cfg = ex.config(exp, "paper")
    cfg["model"]["width_mult"] = width_mult
    cfg["data"] = {"source": "synthetic", "train_samples": samples, "test_samples": 1}
    data = load(exp.dataset, cfg)
    base = build_model(
        cfg["architecture"], data.x_train.shape[1], data.num_classes, data.x_train.shape[-1], cfg["model"]
    )

    def make_model(channels_last: bool, compiled: dict):
        model = copy.deepcopy(base).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        owner, step = _stepper(exp, model, cfg, data.num_classes)
        compile_forward(model, compiled)
        return owner, step

    norm, aug, bs = cfg["normalize"], cfg["augment"], min(cfg["batch_size"], 128)
    fast = Batches(
        data.x_train,
        data.y_train,
        bs,
        device=device,
        mean=norm["mean"],
        std=norm["std"],
        augment=aug,
        shuffle=True,
        seed=0,
    )
    reference = reference_loader(
        data.x_train, data.y_train, bs, mean=norm["mean"], std=norm["std"], augment=aug, shuffle=True, seed=0
    )
    variants = {"reference (DataLoader, fp32)": (reference, {}), "suite step, fp32": (fast, {})}
    if device.type == "cuda":
        variants["suite + cudnn.benchmark"] = (fast, {"cudnn_benchmark": True})  # the GPU profiles' setting
        variants["suite + channels_last"] = (fast, {"channels_last": True})
        if torch.cuda.is_bf16_supported():
            variants["suite + channels_last + bf16"] = (fast, {"channels_last": True, "precision": "bf16"})
    if compile_:
        variants["suite + torch.compile"] = (fast, {"compiled": {"compile": True}})
        if device.type == "cuda":
            variants["suite + torch.compile + CUDA graphs"] = (fast, {"compiled": {"cuda_graphs": True}})
    rates = {k: [] for k in variants}
    for r in range(rounds + 1):  # round 0 warms every variant up
        for k, (batches_, kw) in variants.items():
            rate = _rate(make_model, batches_, device, batches, **kw)
            if r:
                rates[k].append(rate)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    ref = medians["reference (DataLoader, fp32)"]
    return {
        "model": name,
        "experiment": exp.id,
        "device": device_name(device),
        "width_mult": width_mult,
        "batch_size": bs,
        "images_per_s": medians,
        "vs_reference": {k: v / ref for k, v in medians.items()},
    }


def print_rates(
    names: list[str],
    device: str = "auto",
    width: float | None = None,
    batches: int = 10,
    rounds: int = 3,
    compile_: bool = False,
    threads: int | None = None,
):
    """`bench perf`: a table of images/s and the ratio to the reference per training step, for each named case
    (default all); `width` defaults to 1 on a GPU and 0.25 on the CPU."""
    from tabulate import tabulate

    from bench.methods.training import resolve_device

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    width = width if width is not None else (1.0 if dev.type == "cuda" else 0.25)
    for name in names or list(CASES):
        if name not in CASES:
            raise BenchError(f"unknown model '{name}': one of {', '.join(CASES)}")
        found = measure(name, dev, width, batches, rounds, compile_=compile_)
        print(f"\n{name} ({found['experiment']}, width x{width:g}, batch {found['batch_size']}) on {found['device']}")
        print(
            tabulate(
                [[k, f"{v:,.0f}", f"{found['vs_reference'][k]:.2f}"] for k, v in found["images_per_s"].items()],
                headers=["Training step", "Images/s", "x reference"],
                tablefmt="github",
                disable_numparse=True,
            )
        )
