"""`bench plan`: what a profile costs before it runs, in device-hours, and afterwards predicted vs measured.

A job's work is what its method computes, epoch by epoch (bench/cost/method_costs.py: the model's blocks, frozen and
dropped layers, the layer-wise stages and their caches, the evaluations, the pair searches), counted as forward
MACs (*forward-MAC units*), elements read, pair-search pairs and dims, and batches (bench/cost/job_cost.py, over the
model's parts of bench/cost/model_parts.py). A device's Calibration prices each of them (bench/cost/calibration.py):
probed on this device (bench/cost/probes.py), a given rate, a calibration file, or the papers' printed times
(`--calibrate printed`), which read backwards give the epochs each printed time implies
(bench/cost/implied_epochs.py). These are estimates; `--compare` shows how far they are from the measured training
and evaluation times of finished runs, per job and per method (each run predicted for the samples it had and, for
Learn & Drop and Freezing, the drops it made: a plan before the runs assumes no drop, an upper bound for those two).

This module is the cost model's entry point: plan() and compare(), and the names of the modules above that the
command line, `bench audit`, `bench devicecheck` and the tests use.
"""

import math
from dataclasses import asdict

from bench import experiments as ex
from bench import methods
from bench.cost import method_costs, resources
from bench.cost.calibration import Calibration, printed_calibration, printed_times
from bench.cost.implied_epochs import implied_epochs
from bench.cost.job_cost import job_cost, offload_copy_bytes, stopped
from bench.cost.probes import calibrate_device, probe
from bench.methods.training import resolve_device
from bench.run.measure import device_name
from bench.run.targets import targets

__all__ = [
    "Calibration",
    "calibrate_device",
    "compare",
    "implied_epochs",
    "job_cost",
    "plan",
    "printed_calibration",
    "printed_times",
    "probe",
    "stopped",
]


def plan(
    profile: str,
    seeds: int | None = None,
    device: str = "auto",
    rate: float | None = None,
    calibrate: str = "probe",
    calibration: Calibration | None = None,
    fit=None,
    progress=None,
) -> dict:
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
        exp = ex.get(eid)
        # the predicted peaks on the --fit node (bench/cost/resources.py) and what overflows
        need = resources.job_resources(exp, profile, fit, cpu=not fit.gpu_bytes) if fit is not None else None
        recompute = _recomputes(exp, profile, fit, need, device_type)
        cost = job_cost(exp, profile, device=dev if cal.timed else None, recompute=recompute)
        cost["copy_bytes"] = _offload_copies(exp, profile, fit, need, device_type, cost)
        cost["seconds"] = cal.seconds(cost)
        cost["recompute"] = recompute
        if need is not None:  # gpu=0: on the host
            cost.update(
                {k: need[k] for k in ("device_bytes", "host_bytes", "disk_bytes")},
                memory={k: need[k] for k in ("device", "host", "disk")},
                overflow=resources.overflow(need, fit),
                offload_units=need["offload"]["units"],
            )
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
    return {
        "profile": profile,
        "device": device_label,
        "device_type": device_type,
        "rate_units_per_s": cal.rate,
        "device_costs": asdict(cal),
        "seeds": n_seeds,
        "calibration": calibration,
        "jobs": jobs,
        "hours_per_paper": per_paper,
        "hours_total": sum(per_paper.values()),
        "companion_hours": per_reading,
    }


def _recomputes(exp, profile: str, fit, need: dict | None, device_type: str) -> bool:
    """Whether the plan charges the job's activation recomputation (bench.cost.resources.recompute_rule) on the
    node it plans for: the --fit node where it has a GPU (`need`, its resources there), else the papers' node
    (PAPERS_NODE); with a CPU's calibration the jobs run on the host, where auto is off."""
    if device_type == "cpu":
        return resources.recompute_choice(exp, profile, resources.PAPERS_NODE, cpu=True)["on"]
    if need is not None and fit.gpu_bytes:
        return need["recompute"]["on"]
    return resources.recompute_choice(exp, profile, resources.PAPERS_NODE)["on"]


def _offload_copies(exp, profile: str, fit, need: dict | None, device_type: str, cost: dict) -> float:
    """The bytes PredSim's offloaded optimizer states cross between host and device (bench.cost.job_cost.
    offload_copy_bytes) on the node the plan plans for, picked as `_recomputes` picks it."""
    if exp.method != "predsim":
        return 0.0
    if device_type == "cpu":
        choice = resources.offload_choice(exp, profile, resources.PAPERS_NODE, cpu=True)
    elif need is not None and fit.gpu_bytes:
        choice = need["offload"]
    else:
        choice = resources.offload_choice(exp, profile, resources.PAPERS_NODE)
    return offload_copy_bytes(exp, profile, choice["units"], cost)


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
        measured = sum(e.get("epoch_time_s", 0.0) + e.get("eval_time_s", 0.0) for e in epochs) or r["metrics"].get(
            "train_time_s", math.nan
        )
        data = r.get("data") or {}
        samples = (data["train_samples"], data["test_samples"]) if "train_samples" in data else None
        drops = method_costs.drops_from_epochs(epochs) if methods.plan_module(exp.method).COST.drops else None
        recomputed = bool((r.get("environment") or {}).get("activation_checkpointing"))  # as the run decided
        cost = job_cost(exp, profile, samples, drops, dev, recomputed)
        units = (r.get("environment") or {}).get("optimizer_offload_units") or []  # as the run decided
        predicted = cal.seconds({**cost, "copy_bytes": offload_copy_bytes(exp, profile, units, cost)})
        wall = r["metrics"].get("wall_time_s")
        # host memory: a CPU run's measured peak RSS against its predicted host peak (bench/cost/resources.py)
        host_mb = r["metrics"].get("peak_host_rss_mb") if r["metrics"].get("memory_kind") == "cpu_peak_rss" else None
        start_mb = r["metrics"].get("host_rss_start_mb")
        host_predicted = (
            resources.job_resources(
                exp,
                profile,
                samples=samples,
                cpu=True,
                process_bytes=start_mb * 2**20 if start_mb else resources.PROCESS_BYTES,
            )["host_bytes"]
            / 2**20
            if host_mb
            else math.nan
        )
        rows.append(
            {
                "experiment": eid,
                "method": exp.method,
                "seed": seed,
                "predicted_s": predicted,
                "measured_s": measured,
                "ratio": predicted / measured if measured else math.nan,
                "rest_s": wall - measured if wall else math.nan,
                "host_predicted_mb": host_predicted,
                "host_measured_mb": host_mb or math.nan,
                "host_ratio": host_predicted / host_mb if host_mb else math.nan,
            }
        )
    return rows
