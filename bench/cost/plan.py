"""`bench plan`: what a profile costs before it runs, in device-hours, and afterwards predicted vs measured.

A job's work is counted in *forward-MAC units*: the MACs of one forward pass of one sample (ptflops, the model at
the profile's width and input size) times how many such passes its training does:

  training   samples x epochs x the method's passes per sample (below), summed over its stages
  evaluation test samples x evaluations (after every epoch or stage epoch) x 1

Passes per training sample, in forward units (a backward pass costs about two forwards):
  backprop, learn_drop, freezing    3      (Learn & Drop's drops only lower this: an upper bound)
  predsim                           3.3    (+10 %: the local similarity convs and decoders)
  layer-wise stage for block i of n (si_forward, greedy_layerwise, belilovsky_greedy, fb_si's SI layers):
                                    (i + 3) / n   (forward through blocks 0..i, backward through block i; blocks
                                                   taken as equal in cost), then the classifier stage: 1;
                                    3 / n + i / (n x the stage's epochs) when the frozen prefix's features are
                                                   cached (no augmentation: computed once per stage);
                                    SI with partners over the data (neighbours: data): x 3 (each anchor brings
                                                   two partners), plus the search's forward pass once per stage;
                                    the growing network (train_scope: growing): 3 (i + 1) / n
  layer_to_layer stage              3      (forward through everything, backward through the window; the window
                                            is most of the network in the early stages); its stages: method_options
                                            `stages`, else half the model's Keras layers (as the method counts them)
The device's rate comes from a probe: a few training steps of a CIFAR VGG-11 at the profile's width on this
device, in forward-MAC units per second. A second probe measures what a step costs beyond its MACs: a few steps of
a LeNet (a model of a few MMACs, where launching the kernels, the optimizer's per-tensor work and the batch's
gather and augmentation dominate), minus their MACs' share at the probed rate, is the overhead per batch. Seconds
= units / rate + batches x overhead (training batches of every stage epoch, plus evaluation batches). Without the
overhead term LeNet-size jobs were predicted at a tenth of their measured time. These are estimates; `--compare`
shows how far they are from the measured times of finished runs, per job.

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
their implied epochs are upper bounds; layer_to_layer's stages are counted at a full training pass each (3), an
upper bound on their cost, so its implied epochs are lower bounds.
"""
import json
import math
import os
import statistics
from functools import cache
from pathlib import Path

import torch

from bench import BenchError
from bench import experiments as ex
from bench.claims import registry
from bench.claims.datasets import DATASETS
from bench.data.loader import augments
from bench.methods.si import SI_DEFAULTS
from bench.methods.training import resolve_device
from bench.models import build_model
from bench.run.measure import device_name, forward_macs
from bench.run.targets import targets

PROBE_EXPERIMENT = "cruciata-cifar10-vgg11-backprop"
OVERHEAD_EXPERIMENT = "karimi-fashion_mnist-lenet-backprop-sgd"
STAGED = {"si_forward", "greedy_layerwise", "belilovsky_greedy"}
DEFAULT_STAGE_EPOCHS = {"si_forward": 10, "greedy_layerwise": 10, "belilovsky_greedy": 50, "fb_si": 10}


def _model(cfg: dict, dataset: str):
    info = DATASETS[dataset]
    size = cfg.get("input_size") or info.size
    return build_model(cfg["architecture"], info.channels, info.num_classes, size, cfg["model"])


def _models_version() -> str:
    """A digest of the model code: the MACs cache is only valid for the models that filled it."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((Path(__file__).parent.parent / "models").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


MACS_CACHE = Path.home() / ".cache" / "layerwise-bench" / f"plan_macs-{_models_version()}.json"


@cache
def _disk_cache() -> dict:
    try:
        return json.loads(MACS_CACHE.read_text())
    except (OSError, ValueError):
        return {}


def _macs(model_json: str, dataset: str) -> tuple[int, int]:
    """(forward MACs per sample, number of blocks) of a model config (architecture, options, input size), cached in
    memory and in ~/.cache/layerwise-bench/plan_macs-<model code digest>.json (counting all the paper profile's models takes minutes)."""
    key = f"{dataset}:{model_json}"
    found = _disk_cache()
    if key not in found:
        model = _model(json.loads(model_json), dataset)
        found[key] = [forward_macs(model, "pytorch"), len(getattr(model, "blocks", [])) or 1]
        MACS_CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = MACS_CACHE.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(found, sort_keys=True))
        os.replace(tmp, MACS_CACHE)
    return tuple(found[key])


@cache
def _keras_layer_count(model_json: str, dataset: str, granularity: str, input_layer: bool) -> int:
    """How many layers layer_to_layer's window slides over (bench.methods.layer_to_layer.keras_layers): its default
    number of stages is half of them."""
    from bench.methods.layer_to_layer import keras_layers

    return len(keras_layers(_model(json.loads(model_json), dataset), granularity, input_layer))


def schedule(method: str, cfg: dict, n_blocks: int, n_layers: int | None = None) -> list[tuple[int, float]]:
    """[(epochs, forward passes per training sample)] of a run's stages. `n_layers`: layer_to_layer's Keras layer
    count, whose half is its number of stages when method_options set none."""
    opts = cfg.get("method_options", {}) or {}
    epochs = cfg["epochs"]
    if method in ("backprop", "learn_drop", "freezing"):
        return [(epochs, 3.0)]
    if method == "predsim":
        return [(epochs, 3.3)]
    if method == "layer_to_layer":
        per = int(opts.get("epochs_per_stage", epochs))
        stages = opts.get("stages") or (n_layers // 2 if n_layers else None)
        if not stages:
            raise ValueError("layer_to_layer sets no `stages` and the model's Keras layer count is not given")
        return [(per, 3.0)] * int(stages)
    per_layer = int(opts.get("epochs_per_layer", DEFAULT_STAGE_EPOCHS.get(method, epochs)))
    cached = opts.get("cache_prefix", True) and not augments(cfg.get("augment"))

    si_opts = {**SI_DEFAULTS, **opts} if method in ("si_forward", "fb_si") else {}
    copies = 3 if si_opts.get("neighbours") == "data" else 1  # an anchor and its two partners of Eq. 8
    growing = si_opts.get("train_scope") == "growing"

    def stage(i: int) -> tuple[int, float]:
        # block i of n: forward and backward through it (3/n) every epoch; the frozen prefix (i/n) every epoch, or
        # once per stage when its features are cached (bench/methods/layerwise.py: no augmentation). SI with
        # partners over the data: every anchor brings two partners (3 x the block, and the prefix when not cached),
        # plus one forward pass of the training set through the prefix and the block for the search, per stage
        # (its distance computations are not MACs of the model and are not counted). The growing network: forward
        # and backward through blocks 0..i, no frozen prefix.
        if growing:
            per_epoch, search = copies * 3 * (i + 1) / n_blocks, (i + 1) / n_blocks
        else:
            prefix = i / n_blocks / per_layer if cached else copies * i / n_blocks
            per_epoch, search = copies * 3 / n_blocks + prefix, (1 + (0 if cached else i)) / n_blocks
        return per_layer, per_epoch + (search / per_layer if copies == 3 else 0.0)

    if method == "fb_si":
        k = int(opts.get("si_layers", 1))
        return [stage(i) for i in range(k)] + [(epochs, 3.0)]
    if method in STAGED:
        n = int(opts.get("feature_blocks") or n_blocks)
        stages = [stage(i) for i in range(n)]
        if method != "belilovsky_greedy":
            stages.append((int(opts.get("classifier_epochs") or per_layer), 1.0))
        return stages
    raise ValueError(f"bench plan has no cost model for method '{method}'")


def job_cost(exp, profile: str) -> dict:
    """The work of one (experiment, seed) job in forward-MAC units, with what it is made of."""
    cfg = ex.config(exp, profile)
    model_json = json.dumps({k: cfg[k] for k in ("architecture", "model")} | {"input_size": cfg.get("input_size")},
                            sort_keys=True)
    macs, n_blocks = _macs(model_json, exp.dataset)
    info = DATASETS[exp.dataset]
    train_n = min(cfg["data"].get("train_samples") or info.train_size, info.train_size)
    test_n = min(cfg["data"].get("test_samples") or info.test_size, info.test_size)
    n_layers = None
    if exp.method == "layer_to_layer" and not (cfg.get("method_options") or {}).get("stages"):
        opts = cfg.get("method_options") or {}
        n_layers = _keras_layer_count(model_json, exp.dataset, opts.get("granularity", "keras"),
                                      bool(opts.get("input_layer", False)))
    stages = schedule(exp.method, cfg, n_blocks, n_layers)
    epochs = sum(e for e, _ in stages)
    units = macs * (train_n * sum(e * f for e, f in stages) + test_n * epochs)
    batches = epochs * (math.ceil(train_n / cfg["batch_size"]) + math.ceil(test_n / cfg.get("eval_batch_size", 512)))
    return {"experiment": exp.id, "paper": exp.paper, "method": exp.method, "macs": macs, "epochs": epochs,
            "stage_epochs": [e for e, _ in stages], "train_samples": train_n, "units": units, "batches": batches}


def predicted_seconds(cost: dict, rate: float, overhead: float = 0.0) -> float:
    """A job's estimated seconds: its units at `rate` plus `overhead` seconds per batch."""
    return cost["units"] / rate + cost["batches"] * overhead


def _probe_rates(exp_id: str, profile: str, device: torch.device, steps: int, rounds: int) -> tuple[int, list]:
    """(forward MACs per sample, [(images, seconds)] per round after a warm-up round) of a few training steps of
    the experiment's model (its config in `profile`) on stand-in data of its shape."""
    from bench.data.loader import Batches
    from bench.methods.training import ce_step, make_optimizer, timed_steps

    exp = ex.get(exp_id)
    cfg = ex.config(exp, profile)
    info = DATASETS[exp.dataset]
    size = cfg.get("input_size") or info.size
    model = _model(cfg, exp.dataset).to(device)
    macs = forward_macs(model, "pytorch")
    bs = min(cfg["batch_size"], 128)
    x = torch.randint(0, 256, (bs * steps, info.channels, size, size), dtype=torch.uint8)
    y = torch.randint(0, info.num_classes, (bs * steps,))
    batches = Batches(x, y, bs, device=device, mean=cfg["normalize"]["mean"], std=cfg["normalize"]["std"])
    step = ce_step(model.train(), make_optimizer(model.parameters(), cfg))
    timed = [timed_steps(step, batches, device, steps) for _ in range(rounds + 1)]
    return macs, timed[1:]  # round 0 warms up


def probe(profile: str, device: torch.device, steps: int = 8, rounds: int = 3) -> float:
    """Forward-MAC units per second of training on this device (median of rounds), from a CIFAR VGG-11."""
    macs, timed = _probe_rates(PROBE_EXPERIMENT, profile, device, steps, rounds)
    return statistics.median(3.0 * macs * images / seconds for images, seconds in timed)


def overhead_probe(profile: str, device: torch.device, rate: float, steps: int = 30, rounds: int = 3) -> float:
    """Seconds per batch beyond the MACs' share at `rate` (median of rounds, at least 0), from a LeNet."""
    macs, timed = _probe_rates(OVERHEAD_EXPERIMENT, profile, device, steps, rounds)
    return max(0.0, statistics.median((seconds - 3.0 * macs * images / rate) / steps for images, seconds in timed))


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


def calibrate_device(profile: str, device: torch.device, rate: float | None = None,
                     overhead: float | None = None) -> tuple[float, float]:
    """(rate, overhead per batch) for this device: what is given, the rest probed (a given rate alone: no
    overhead)."""
    if rate is None:
        rate = probe(profile, device)
        if overhead is None:
            overhead = overhead_probe(profile, device, rate)
    return rate, overhead or 0.0


def plan(profile: str, seeds: int | None = None, device: str = "auto", rate: float | None = None,
         calibrate: str = "probe", overhead: float | None = None) -> dict:
    """Every job of the profile with its estimated seconds; totals per paper and for the suite. `calibrate`:
    'probe' (this device's measured rate and per-batch overhead, unless `rate` / `overhead` are given; a given rate
    without an overhead means none) or 'printed' (the papers' printed times, no overhead term)."""
    n_seeds = seeds or len(ex.seeds(profile))
    if calibrate == "printed":
        calibration = printed_calibration()
        rate, device_label, device_type = calibration["rate"], "; ".join(calibration["hardware"]), "printed"
        overhead = 0.0
    else:
        dev = resolve_device(device)
        calibration = {"source": "given" if rate else "probe"}
        rate, overhead = calibrate_device(profile, dev, rate, overhead)
        device_label, device_type = device_name(dev), dev.type
    jobs = []
    for eid in targets(profile):
        cost = job_cost(ex.get(eid), profile)
        cost["seconds"] = predicted_seconds(cost, rate, overhead)
        jobs.append(cost)
    per_paper = {}
    for j in jobs:
        per_paper[j["paper"]] = per_paper.get(j["paper"], 0.0) + j["seconds"] * n_seeds / 3600
    return {"profile": profile, "device": device_label, "device_type": device_type, "rate_units_per_s": rate,
            "overhead_s_per_batch": overhead, "seeds": n_seeds,
            "calibration": calibration,
            "jobs": jobs, "hours_per_paper": per_paper, "hours_total": sum(per_paper.values())}


def compare(profile: str, rate: float, results="results", overhead: float = 0.0) -> list[dict]:
    """Predicted vs measured training + evaluation seconds of every finished run of the profile."""
    from bench.run.results import load_results

    rows = []
    for (eid, seed), r in sorted(load_results(profile, ex.seeds(profile), results).items()):
        if r.get("status") != "FINISHED":
            continue
        measured = sum(e.get("epoch_time_s", 0.0) + e.get("eval_time_s", 0.0) for e in r.get("epochs", [])) \
            or r["metrics"].get("train_time_s", math.nan)
        predicted = predicted_seconds(job_cost(ex.get(eid), profile), rate, overhead)
        rows.append({"experiment": eid, "seed": seed, "predicted_s": predicted, "measured_s": measured,
                     "ratio": predicted / measured if measured else math.nan})
    return rows
