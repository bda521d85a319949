"""`bench plan`: what a profile costs before it runs, in device-hours, and afterwards predicted vs measured.

A job's work is what its method computes, epoch by epoch (bench/cost/method_costs.py: the model's blocks, frozen and
dropped layers, the layer-wise stages and their caches, the evaluations, the pair searches), counted as forward
MACs (*forward-MAC units*), elements written, conv input-window elements, layer calls and batches. A device's
Calibration prices each of them; the probes (`probe`) measure them on this device: five short training steps
(a VGG-11 at the profile's width, BN and ReLU layers, a LeNet, 24 narrow linear layers, one tiny linear layer),
timed in interleaved rounds and fitted by non-negative least squares, plus a pair-search probe for SI. Seconds =
units / rate + elements x per_element + input-window elements x per_unfold + calls x per_call + batches x
per_batch. These are estimates; `--compare` shows how far they are from the measured training and evaluation times
of finished runs, per job and per method (each run predicted for the samples it had and, for Learn & Drop and
Freezing, the drops it made: a plan before the runs assumes no drop, an upper bound for those two).

Calibrating on the papers' printed times instead (`--calibrate printed`): a paper that states the GPU its times
were measured on (papers.yaml `hardware_match`; of the four only Cruciata et al., an RTX 3090) prints what each of
its backprop jobs took; each such registry cell gives a rate, the job's units (this profile's config of the cell's
experiment) over the printed seconds, and the plan uses their median. The rates spread widely (small models run
far below the GPU's peak: per-sample costs that do not scale with MACs, such as the authors' input pipeline), so
the plan also gives the totals at the quartiles and the extremes of them. No separate overhead term is fitted: the
printed times include the authors' overheads, and the median rate carries them. This is the GPU-hours figure
available without a GPU: an estimate for that paper's GPU, traceable to the cells it was fitted on.

Read backwards, the same calibration says how many epochs each printed training time implies (`implied_epochs()`,
listed by `bench audit`): the configured schedule of the cell's experiment (the `paper` profile) scaled until its
seconds at the median rate meet the printed ones, with the range at the quartile rates. For the papers that do not
state their GPU this assumes one like the calibration's. Small models run far below the median rate (see above), so
their implied epochs are upper bounds.
"""
import atexit
import json
import math
import os
import statistics
import time
import dataclasses
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench import BenchError
from bench import experiments as ex
from bench.claims import registry
from bench.claims.datasets import DATASETS
from bench.cost import method_costs, resources
from bench.data.loader import augments
from bench.methods.training import resolve_device
from bench.run.measure import device_name, forward_macs, meta_shape_passthrough
from bench.run.targets import targets

PROBE_EXPERIMENT = "cruciata-cifar10-vgg11-backprop"  # the rate probe's network (at the profile's config)
# the code a model's parts are measured by: the parts cache is only valid for the code that filled it
PARTS_CODE = ["models/*.py", "cost/method_costs.py", "methods/learn_drop/*.py", "methods/layer_to_layer.py",
              "methods/predsim.py"]


_model = resources.config_model


@cache
def _code_version() -> str:
    """The digest of the code that counts a model's parts, read once per process (every cache look-up names it)."""
    import hashlib

    digest = hashlib.sha256()
    root = Path(__file__).parent.parent
    for pattern in PARTS_CODE:
        for path in sorted(root.glob(pattern)):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cache_dir() -> Path:
    """Where `bench plan` keeps what it counted: $BENCH_CACHE, else $XDG_CACHE_HOME/layerwise-bench, else
    ~/.cache/layerwise-bench (the test suite points $BENCH_CACHE into its own temporary folder)."""
    if os.environ.get("BENCH_CACHE"):
        return Path(os.environ["BENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "layerwise-bench"


def parts_cache() -> Path:
    return cache_dir() / f"plan_parts-{_code_version()}.json"
# the method options a model's parts depend on (the Learn & Drop chain, the Keras layers, PredSim's units)
PARTS_OPTIONS = {"learn_drop": ("shortcut_position",), "freezing": ("shortcut_position",),
                 "layer_to_layer": ("granularity", "input_layer"), "predsim": ("dim_in_decoder",)}


_DISK: dict = {}  # cache file -> {"parts": what is known, "seen": the file's (mtime, size) when last read or written}
SAVE_EVERY_S = 2.0  # new parts are written at most this often while counting, and at the process's exit


def _stamp(path: Path):
    try:
        st = path.stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None


def _read_parts(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _merge_from_disk(entry: dict, path: Path):
    """Add what another process wrote to the cache file since this one last read or wrote it."""
    if _stamp(path) != entry["seen"]:
        entry["parts"].update({k: v for k, v in _read_parts(path).items() if k not in entry["parts"]})
        entry["seen"] = _stamp(path)


def _disk_cache(refresh: bool = False) -> dict:
    """The parts counted so far: the cache file read once per process, and again (merged) when `refresh` and another
    process has written it since (they count side by side: the workflow's jobs, the test processes)."""
    path = parts_cache()
    entry = _DISK.get(path)
    if entry is None:
        entry = _DISK[path] = {"parts": _read_parts(path), "seen": _stamp(path), "unsaved": 0, "saved_at": 0.0}
        atexit.register(_save_parts, path)
    elif refresh:
        _merge_from_disk(entry, path)
    return entry["parts"]


def _save_parts(path: Path, force: bool = True):
    """Write the cache file atomically with what other processes added since it was read; without `force`, only
    when SAVE_EVERY_S have passed since the last write."""
    entry = _DISK.get(path)
    if entry is None or not entry["unsaved"] or (not force and time.monotonic() - entry["saved_at"] < SAVE_EVERY_S):
        return
    _merge_from_disk(entry, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry["parts"], sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # a cache that cannot be written is counted again next time
        return
    entry.update(seen=_stamp(path), unsaved=0, saved_at=time.monotonic())


def _counted_parts(exp, cfg: dict) -> dict:
    """The model's parts, untimed: counted on the meta device (shapes only, no arithmetic: the MACs are the same as
    on the CPU, in a fraction of the time for full-width models), on the CPU where a model cannot run on meta."""
    try:
        # everything built here is on meta: the model, and the local heads the method builds beside it
        with torch.device("meta"), meta_shape_passthrough():
            model = _model(cfg, exp.dataset)
            return method_costs.measure_parts(model, exp.method, cfg, forward_macs(model, "pytorch", copy_model=False))
    except (NotImplementedError, RuntimeError):
        model = _model(cfg, exp.dataset)
        return method_costs.measure_parts(model, exp.method, cfg, forward_macs(model, "pytorch"))


def _parts_key(exp, cfg: dict) -> str:
    opts = cfg.get("method_options") or {}
    kind = exp.method if exp.method in ("learn_drop", "freezing", "layer_to_layer", "predsim", "belilovsky_greedy",
                                        "greedy_layerwise") else "blocks"
    return json.dumps({"dataset": exp.dataset, "architecture": cfg["architecture"], "model": cfg["model"],
                       "input_size": cfg.get("input_size"), "kind": kind,
                       "options": {k: opts.get(k) for k in PARTS_OPTIONS.get(exp.method, ())}}, sort_keys=True)


_TIMED: dict = {}


def _parts(exp, cfg: dict, device: torch.device | None = None) -> dict:
    """The model's parts for the method's cost (bench.cost.method_costs.measure_parts). Untimed (MACs), cached in memory
    and in <cache_dir()>/plan_parts-<code digest>.json (counting all the paper profile's models takes
    minutes); timed on `device` at the config's batch size, cached in memory for this process."""
    key = _parts_key(exp, cfg)
    if device is not None:
        timed_key = (key, str(device), cfg["batch_size"])
        if timed_key not in _TIMED:
            model = _model(cfg, exp.dataset)
            _TIMED[timed_key] = method_costs.measure_parts(model, exp.method, cfg, _parts(exp, cfg)["total"], device,
                                                           cfg["batch_size"])
        return _TIMED[timed_key]
    found = _disk_cache()
    if key not in found:
        found = _disk_cache(refresh=True)  # counted by another process meanwhile?
    if key not in found:
        found[key] = _counted_parts(exp, cfg)
        path = parts_cache()
        _DISK[path]["unsaved"] += 1
        _save_parts(path, force=False)
    return found[key]


def job_cost(exp, profile: str, samples: tuple[int, int] | None = None, drops: list | None = None,
             device: torch.device | None = None) -> dict:
    """The work of one (experiment, seed) job (bench/cost/method_costs.py), in all: forward-MAC units, forward seconds
    on `device` (its layers timed there; 0 without a device), elements read, pair-search pairs and dims, and
    batches, with what they are made of. `samples`: (training, test) samples, default the profile's; `drops`:
    Learn & Drop's or Freezing's (phase, cut) per epoch as a run did them (default: no drop)."""
    cfg = ex.config(exp, profile)
    parts = _parts(exp, cfg, device)
    info = DATASETS[exp.dataset]
    if samples is None:
        samples = (min(cfg["data"].get("train_samples") or info.train_size, info.train_size),
                   min(cfg["data"].get("test_samples") or info.test_size, info.test_size))
    train_n, test_n = samples
    phases = stopped(method_costs.phases(exp.method, cfg, parts, train_n, augments(cfg.get("augment")), drops),
                     ex.companion_charge_epochs().get(exp.id))
    work = dict.fromkeys((*method_costs.KEYS, "batches"), 0.0)
    for phase in phases:
        for k, v in phase.work(train_n, test_n, cfg["batch_size"], cfg.get("eval_batch_size", 512)).items():
            work[k] += v
    # Learn & Drop's and Freezing's phases are its epochs, one stage
    stages = [len(phases)] if exp.method in ("learn_drop", "freezing") else [p.epochs for p in phases]
    return {"experiment": exp.id, "paper": exp.paper, "method": exp.method, "macs": parts["total"],
            "epochs": sum(p.epochs for p in phases), "stage_epochs": stages, "train_samples": train_n,
            "test_samples": test_n, "units": work.pop("macs"), **work}


def stopped(phases: list, epochs: int | None) -> list:
    """The phases a run that stops after `epochs` epochs in all runs (a companion that diverges: its grid entry's
    `charge_epochs`); every phase when None."""
    if epochs is None:
        return phases
    out, left = [], epochs
    for phase in phases:
        if left <= 0:
            break
        out.append(dataclasses.replace(phase, epochs=min(phase.epochs, left)))
        left -= phase.epochs
    return out


@dataclass
class Calibration:
    """What a device charges. Timed (a probed calibration, on the device it was probed on): a job's measured
    forward seconds (its layers timed there: bench.cost.method_costs.time_leaves) + elements read x per_read + searched
    pairs x per_pair + pair dims x per_pair_dim + batches x per_batch (the loss, the optimizer step). Untimed (the
    printed calibration, `--rate`, a calibration file from another machine): units and pair dims at `rate`, plus
    the same read, pair and batch terms (0 unless given)."""
    rate: float
    per_read: float = 0.0
    per_pair: float = 0.0
    per_pair_dim: float = 0.0
    per_batch: float = 0.0
    timed: bool = False
    source: str = "given"
    device: str = ""

    def seconds(self, cost: dict) -> float:
        compute = cost["secs"] if self.timed else (cost["units"] + cost.get("pair_dims", 0.0)) / self.rate
        return (compute + cost.get("reads", 0.0) * self.per_read + cost.get("batches", 0.0) * self.per_batch
                + cost.get("pairs", 0.0) * self.per_pair + (cost.get("pair_dims", 0.0) * self.per_pair_dim
                                                            if self.timed else 0.0))


def predicted_seconds(cost: dict, rate: float) -> float:
    """A job's seconds at `rate` alone (the printed calibration: the papers' times carry their overheads)."""
    return Calibration(rate).seconds(cost)


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
    model = _model(cfg, exp.dataset)
    macs, bs = forward_macs(model, "pytorch"), min(cfg["batch_size"], 128)
    model = model.to(device).train()
    batch = [(torch.randn((bs, *model.input_shape), device=device), torch.randint(0, 10, (bs,), device=device))]
    rate = 3 * macs * bs / _seconds_per_step(ce_step(model, make_optimizer(model.parameters(), cfg)), batch, device,
                                             steps, rounds)
    tiny = nn.Linear(8, 10).to(device)
    batch = [(torch.randn((8, 8), device=device), torch.randint(0, 10, (8,), device=device))]
    per_batch = _seconds_per_step(ce_step(tiny, torch.optim.SGD(tiny.parameters(), lr=0.01, momentum=0.9)), batch,
                                  device, 20 * steps, rounds)
    cache_rows = torch.randn((8192, 256), device=device)
    index = torch.randint(0, 8192, (128,), device=device)
    per_read = _median_seconds(lambda: [cache_rows.index_select(0, index) for _ in range(steps)], device,
                               rounds) / (steps * 128 * 256)
    searched = {}
    for dims in (16, 256):
        z, y = torch.randn(1024, dims, device=device), torch.randint(0, 10, (1024,), device=device)
        searched[dims] = _median_seconds(lambda: data_pairs([(z, y)], device), device, rounds) / 1024 ** 2
    per_pair_dim = max(0.0, (searched[256] - searched[16]) / 240)
    per_pair = max(0.0, searched[16] - 16 * per_pair_dim)
    return Calibration(rate, per_read, per_pair, per_pair_dim, per_batch, timed=True, source="probe",
                       device=device_name(device))


def printed_times(method: str | None = None) -> list[dict]:
    """The training times the papers print for jobs on the hardware they state (papers.yaml `hardware_match`),
    each with the job's units (in the `paper` profile: the runs the times were printed for) and the rate they
    imply (units per printed second)."""
    meta = registry.papers()
    rows = []
    for c in registry.load_claims():
        if c.metric != "train_time" or not meta[c.paper].get("hardware_match") or method not in (None, c.method):
            continue
        exp = ex.Experiment(*c.experiment_key())
        seconds = c.value * registry.SECONDS_PER_TIME_UNIT[c.unit]
        units = job_cost(exp, "paper")["units"]
        rows.append({"claim": c.id, "paper": c.paper, "experiment": exp.id, "method": c.method, "printed_s": seconds,
                     "units": units, "rate": units / seconds, "hardware": meta[c.paper]["hardware"]})
    return rows


def printed_calibration() -> dict:
    """The median rate of the backprop jobs' printed times on stated hardware, with the quartiles and extremes."""
    rows = printed_times("backprop")
    if not rows:
        raise BenchError("no paper prints backprop training times on stated hardware (papers.yaml hardware_match)")
    rates = [r["rate"] for r in rows]
    q1, median, q3 = statistics.quantiles(rates, n=4, method="inclusive") if len(rates) > 1 else rates * 3
    meta = registry.papers()
    return {"source": "printed", "rate": median, "rate_q1": q1, "rate_q3": q3, "rate_min": min(rates),
            "rate_max": max(rates),
            "cells": [r["claim"] for r in rows], "hardware": sorted({r["hardware"] for r in rows}),
            "gpu": sorted({meta[r["paper"]]["hardware_match"] for r in rows})}


def _implied(claims, calibration: dict, profile: str) -> list[dict]:
    meta = registry.papers()
    rates = {k: calibration[k] for k in ("rate", "rate_q1", "rate_q3", "rate_min", "rate_max")}
    rows = []
    for c in claims:
        if c.metric != "train_time" or c.derived_from:
            continue
        exp = ex.Experiment(*c.experiment_key())
        row = {"claim": c.id, "paper": c.paper, "printed": c.printed, "unit": c.unit, "experiment": exp.id,
               "method": c.method, "printed_s": c.value * registry.SECONDS_PER_TIME_UNIT[c.unit], "profile": profile,
               "hardware_stated": bool(meta.get(c.paper, {}).get("hardware_match"))}
        try:
            cost = job_cost(exp, profile)
        except (ValueError, BenchError) as e:  # a method without a cost model, a model or grid the suite lacks
            rows.append(row | {"skipped": str(e)})
            continue
        seconds = {k: predicted_seconds(cost, rate) for k, rate in rates.items()}
        row.update(epochs=cost["epochs"], stage_epochs=cost["stage_epochs"], units=cost["units"],
                   predicted_s=seconds["rate"])
        # the configured schedule scaled until its predicted seconds meet the printed ones: a faster GPU (a higher
        # rate) gets through more epochs in the printed time
        row.update({k.replace("rate", "implied"): cost["epochs"] * row["printed_s"] / s for k, s in seconds.items()})
        rows.append(row)
    return rows


@cache
def _implied_default() -> tuple[dict, ...]:
    return tuple(_implied(registry.load_claims(), printed_calibration(), "paper"))


def implied_epochs(claims=None, calibration: dict | None = None, profile: str = "paper") -> list[dict]:
    """The epochs each printed training time implies: for every train_time cell (derived cells aside), its
    experiment's configured schedule in `profile` (the paper's settings), its seconds predicted at the printed
    calibration's median rate (printed_calibration(): the backprop times of the paper that states its GPU), and
    implied = configured epochs x printed seconds / predicted seconds, also at the quartile and extreme rates
    (implied_q1 .. implied_q3, implied_min .. implied_max: a slower rate, fewer epochs). For a staged method
    (layer_to_layer, si_forward, ...) the configured epochs are all its stages' epochs together (stage_epochs), and
    the implied ones the whole schedule scaled alike. A cell whose experiment has no cost model comes back with
    `skipped` (why) instead. For a paper that does not state its GPU the numbers assume one like the calibration's
    (`hardware_stated` False). The default call (the registry, printed calibration, `paper` profile) is cached."""
    if claims is None and calibration is None and profile == "paper":
        return [dict(r) for r in _implied_default()]
    return _implied(registry.load_claims() if claims is None else claims,
                    printed_calibration() if calibration is None else calibration, profile)


def calibrate_device(profile: str, device: torch.device, rate: float | None = None) -> Calibration:
    """This device's Calibration: probed (timed), or a given rate alone (untimed, no other term)."""
    return Calibration(rate) if rate else probe(profile, device)


def plan(profile: str, seeds: int | None = None, device: str = "auto", rate: float | None = None,
         calibrate: str = "probe", calibration: Calibration | None = None, fit=None, progress=None) -> dict:
    """Every job of the profile with its estimated seconds; totals per paper and for the suite. `calibrate`:
    'probe' (the given `calibration`, else `rate` alone when given, else this device's probed Calibration) or
    'printed' (the papers' printed times: their median rate alone). Learn & Drop and Freezing are planned without
    drops (a run decides its drops): an upper bound on their cost. `progress(done, total, what)`, when given, hears
    of each step (the probe, then every job) before it starts."""
    tell = progress or (lambda done, total, what: None)
    n_seeds = seeds or len(ex.seeds(profile))
    dev = None
    if calibrate == "printed":
        calibration = printed_calibration()
        cal = Calibration(calibration["rate"], source="printed")
        device_label, device_type = "; ".join(calibration["hardware"]), "printed"
    else:
        dev = resolve_device(device)
        if calibration is None and not rate:
            tell(0, 0, f"probing {device_name(dev)}")
        cal = calibration or calibrate_device(profile, dev, rate)
        calibration = {"source": cal.source}
        device_label = cal.device or device_name(dev)
        device_type = "cpu" if device_label.startswith("CPU") else "cuda"  # a calibration file may be another's
    jobs = []
    planned = targets(profile)
    for done, eid in enumerate(planned):
        tell(done, len(planned), eid)
        cost = job_cost(ex.get(eid), profile, device=dev if cal.timed else None)
        cost["seconds"] = cal.seconds(cost)
        if fit is not None:  # the predicted peaks on that node (bench/cost/resources.py) and what overflows
            need = resources.job_resources(ex.get(eid), profile, fit, cpu=not fit.gpu_bytes)  # gpu=0: on the host
            cost.update({k: need[k] for k in ("device_bytes", "host_bytes", "disk_bytes")},
                        memory={k: need[k] for k in ("device", "host", "disk")},
                        overflow=resources.overflow(need, fit))
        jobs.append(cost)
    per_paper, per_reading = {}, {}  # paper -> hours; paper -> {a companion's reading -> hours}
    readings = ex.companion_readings()
    for j in jobs:
        h = j["seconds"] * n_seeds / 3600
        per_paper[j["paper"]] = per_paper.get(j["paper"], 0.0) + h
        if j["experiment"] in readings:
            mine = per_reading.setdefault(j["paper"], {})
            label = readings[j["experiment"]][1]
            mine[label] = mine.get(label, 0.0) + h
    return {"profile": profile, "device": device_label, "device_type": device_type, "rate_units_per_s": cal.rate,
            "device_costs": asdict(cal), "seeds": n_seeds, "calibration": calibration,
            "jobs": jobs, "hours_per_paper": per_paper, "hours_total": sum(per_paper.values()),
            "companion_hours": per_reading}


def compare(profile: str, cal: Calibration, results="results", device: str = "auto") -> list[dict]:
    """Predicted vs measured training + evaluation seconds of every finished run of the profile: each run predicted
    for the samples it trained on and, for Learn & Drop and Freezing, the drops it made; `rest_s`: what the job
    spent outside its epochs (loading data, starting MLflow, checkpoints), which the model does not predict."""
    from bench.run.results import load_results

    dev = resolve_device(device) if cal.timed else None
    rows = []
    for (eid, seed), r in sorted(load_results(profile, ex.seeds(profile), results).items()):
        if r.get("status") != "FINISHED":
            continue
        exp = ex.get(eid)
        epochs = r.get("epochs", [])
        measured = sum(e.get("epoch_time_s", 0.0) + e.get("eval_time_s", 0.0) for e in epochs) \
            or r["metrics"].get("train_time_s", math.nan)
        data = r.get("data") or {}
        samples = (data["train_samples"], data["test_samples"]) if "train_samples" in data else None
        drops = method_costs.drops_from_epochs(epochs) if exp.method in ("learn_drop", "freezing") else None
        predicted = cal.seconds(job_cost(exp, profile, samples, drops, dev))
        wall = r["metrics"].get("wall_time_s")
        # host memory: a CPU run's measured peak RSS against its predicted host peak (bench/cost/resources.py)
        host_mb = r["metrics"].get("peak_host_rss_mb") if r["metrics"].get("memory_kind") == "cpu_peak_rss" else None
        start_mb = r["metrics"].get("host_rss_start_mb")
        host_predicted = resources.job_resources(
            exp, profile, samples=samples, cpu=True,
            process_bytes=start_mb * 2**20 if start_mb else resources.PROCESS_BYTES)["host_bytes"] / 2**20 \
            if host_mb else math.nan
        rows.append({"experiment": eid, "method": exp.method, "seed": seed, "predicted_s": predicted,
                     "measured_s": measured, "ratio": predicted / measured if measured else math.nan,
                     "rest_s": wall - measured if wall else math.nan, "host_predicted_mb": host_predicted,
                     "host_measured_mb": host_mb or math.nan,
                     "host_ratio": host_predicted / host_mb if host_mb else math.nan})
    return rows
