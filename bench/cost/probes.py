"""This device's timed Calibration (bench/cost/calibration.py), measured by short probes: a training step of a CIFAR
VGG-11 at the profile's width (its rate, for plans without layer timing), a step of one tiny linear layer (the
fixed cost per batch), reading cached features, and SI's pair search at two sizes (per pair and per pair dimension);
each the median of a few rounds after a warm-up."""

import statistics

import torch
from torch import nn

from bench import experiments as ex
from bench.cost import resources
from bench.cost.calibration import Calibration
from bench.run.measure import device_name, forward_macs

PROBE_EXPERIMENT = "cruciata-cifar10-vgg11-backprop"  # the rate probe's network (at the profile's config)


def _median_seconds(fn, device: torch.device, rounds: int) -> float:
    """The median seconds of `rounds` calls of `fn` after a warm-up one, the device synchronised around each."""
    from bench.methods.training import EpochTimer

    times = []
    for _ in range(rounds + 1):
        with EpochTimer(device) as timer:
            fn()
        times.append(timer.seconds)
    return statistics.median(times[1:])


def _seconds_per_step(step, batches, device, steps: int, rounds: int) -> float:
    from bench.methods.training import timed_steps

    return _median_seconds(lambda: timed_steps(step, batches, device, steps), device, rounds) / steps


def probe(profile: str, device: torch.device, steps: int = 8, rounds: int = 3) -> Calibration:
    """This device's timed Calibration: the fixed cost per batch (a training step of one tiny linear layer: the
    loss, the backward and the optimizer step around nothing), the cost of reading cached features (gathering a
    batch of rows from a cache), the pair search's cost per pair and per pair dimension (SI's search over random
    points of two sizes), and, for plans without layer timing, the rate of a CIFAR VGG-11 at the profile's width
    (its training step's forward-MAC units per second). Each the median of `rounds` after a warm-up."""
    from bench.methods.si import data_pairs
    from bench.methods.training import ce_step, make_optimizer

    exp = ex.get(PROBE_EXPERIMENT)
    cfg = ex.config(exp, profile)
    model = resources.config_model(cfg, exp.dataset)
    macs, bs = forward_macs(model, "pytorch"), min(cfg["batch_size"], 128)
    model = model.to(device).train()
    batch = [(torch.randn((bs, *model.input_shape), device=device), torch.randint(0, 10, (bs,), device=device))]
    rate = (
        3
        * macs
        * bs
        / _seconds_per_step(ce_step(model, make_optimizer(model.parameters(), cfg)), batch, device, steps, rounds)
    )
    tiny = nn.Linear(8, 10).to(device)
    batch = [(torch.randn((8, 8), device=device), torch.randint(0, 10, (8,), device=device))]
    per_batch = _seconds_per_step(
        ce_step(tiny, torch.optim.SGD(tiny.parameters(), lr=0.01, momentum=0.9)), batch, device, 20 * steps, rounds
    )
    cache_rows = torch.randn((8192, 256), device=device)
    index = torch.randint(0, 8192, (128,), device=device)
    per_read = _median_seconds(lambda: [cache_rows.index_select(0, index) for _ in range(steps)], device, rounds) / (
        steps * 128 * 256
    )
    searched = {}
    for dims in (16, 256):
        z, y = torch.randn(1024, dims, device=device), torch.randint(0, 10, (1024,), device=device)
        searched[dims] = _median_seconds(lambda z=z, y=y: data_pairs([(z, y)], device), device, rounds) / 1024**2
    per_pair_dim = max(0.0, (searched[256] - searched[16]) / 240)
    per_pair = max(0.0, searched[16] - 16 * per_pair_dim)
    return Calibration(
        rate, per_read, per_pair, per_pair_dim, per_batch, timed=True, source="probe", device=device_name(device)
    )


def calibrate_device(profile: str, device: torch.device, rate: float | None = None) -> Calibration:
    """This device's Calibration: probed (timed), or a given rate alone (untimed, no other term)."""
    return Calibration(rate) if rate else probe(profile, device)
