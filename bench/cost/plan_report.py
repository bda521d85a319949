"""What `bench plan` prints: device-hours per paper, or predicted against measured (or printed) seconds per job and
per method."""

import json
import math
import statistics
import sys
from dataclasses import fields
from pathlib import Path

from tabulate import tabulate

from bench import BenchError
from bench import experiments as ex
from bench.cost import plan


def hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 10 else f"{h:.3g}"


def load_calibration(path: str) -> plan.Calibration:
    """A Calibration from a JSON file: `bench plan --write`'s (its `device_costs`) or `bench devicecheck`'s. Untimed:
    its device's layers cannot be timed here, so its rate prices the MACs."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise BenchError(f"{path}: cannot read a calibration ({type(err).__name__}: {err})") from None
    found = found.get("device_costs", found) if isinstance(found, dict) else found
    names = {f.name for f in fields(plan.Calibration)}
    if not isinstance(found, dict) or "rate" not in found:
        raise BenchError(f"{path}: field rate: missing (a calibration names at least its rate)")
    for key, value in found.items():
        if key not in names:
            raise BenchError(f"{path}: field {key}: not a calibration field ({', '.join(sorted(names))})")
        if key not in ("source", "device", "timed") and (
            not isinstance(value, (int, float)) or value < 0 or (key == "rate" and value <= 0)
        ):
            raise BenchError(f"{path}: field {key}: {value!r} is not a non-negative number")
    return plan.Calibration(**{**found, "timed": False})


def describe(cal: plan.Calibration) -> str:
    what = "every model's layers timed on it" if cal.timed else f"{cal.rate:.3g} forward-MAC units/s"
    return (
        f"{what} ({cal.source}), {cal.per_batch * 1e3:.3g} ms per batch, {cal.per_read * 1e9:.3g} ns per "
        f"element read from a cache, {cal.per_pair * 1e9:.3g} ns per searched pair and "
        f"{cal.per_pair_dim * 1e9:.3g} ns per pair dimension"
    )


def comparison(rows: list[dict], cal: plan.Calibration, device: str) -> str:
    """Per job, then per method: predicted / measured, with the median and range."""
    mb = lambda v: f"{v:.0f}" if v == v else "–"  # noqa: E731
    jobs = tabulate(
        [
            [
                r["experiment"],
                r["seed"],
                f"{r['predicted_s']:.2f}",
                f"{r['measured_s']:.2f}",
                f"{r['ratio']:.2f}",
                mb(r.get("host_predicted_mb", math.nan)),
                mb(r.get("host_measured_mb", math.nan)),
            ]
            for r in rows
        ],
        headers=[
            "Job",
            "Seed",
            "Predicted s",
            "Measured s",
            "Predicted / measured",
            "Host peak predicted MiB",
            "Measured MiB",
        ],
        tablefmt="github",
        disable_numparse=True,
    )
    per_method = []
    for method in sorted({r["method"] for r in rows}):
        ratios = [r["ratio"] for r in rows if r["method"] == method and r["ratio"] == r["ratio"]]
        memory = [
            r["host_ratio"]
            for r in rows
            if r["method"] == method and r.get("host_ratio", math.nan) == r.get("host_ratio", math.nan)
        ]
        if ratios:
            per_method.append(
                [
                    method,
                    len(ratios),
                    f"{statistics.median(ratios):.2f}",
                    f"{min(ratios):.2f}-{max(ratios):.2f}",
                    f"{statistics.median(memory):.2f} ({min(memory):.2f}-{max(memory):.2f})" if memory else "–",
                ]
            )
    methods = tabulate(
        per_method,
        headers=["Method", "Jobs", "Median predicted / measured", "Range", "Host peak predicted / measured (range)"],
        tablefmt="github",
        disable_numparse=True,
    )
    ratios = sorted(r["ratio"] for r in rows if r["ratio"] == r["ratio"])
    rest = [r["rest_s"] for r in rows if r["rest_s"] == r["rest_s"]]
    lines = [
        jobs,
        "",
        methods,
        "",
        f"{len(rows)} jobs on {device}: {describe(cal)}. Predicted / measured: median "
        f"{statistics.median(ratios):.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}.",
    ]
    if rest:
        lines.append(
            f"Measured is each job's training and evaluation; outside them (loading data, MLflow, "
            f"checkpoints) the jobs spent a median {statistics.median(rest):.1f} s more each, not predicted."
        )
    return "\n".join(lines)


def printed_comparison() -> str:
    """Predicted (at the printed calibration's median rate) against printed seconds of the papers' timed cells."""
    cal = plan.printed_calibration()
    rows = [{**r, "predicted_s": r["units"] / cal["rate"]} for r in plan.printed_times()]
    lines = [
        tabulate(
            [
                [
                    r["claim"],
                    r["method"],
                    f"{r['predicted_s'] / 60:.1f}",
                    f"{r['printed_s'] / 60:.1f}",
                    f"{r['predicted_s'] / r['printed_s']:.2f}",
                ]
                for r in rows
            ],
            headers=["Printed cell", "Method", "Predicted min", "Printed min", "Predicted / printed"],
            tablefmt="github",
        )
    ]
    for method in sorted({r["method"] for r in rows}):
        ratios = [r["predicted_s"] / r["printed_s"] for r in rows if r["method"] == method]
        lines.append(
            f"{method}: predicted / printed median {statistics.median(ratios):.2f}, "
            f"range {min(ratios):.2f}-{max(ratios):.2f} ({len(ratios)} cells)"
        )
    lines.append(
        f"\nrate {cal['rate']:.3g} forward-MAC units/s, the median of the {len(cal['cells'])} backprop "
        f"cells' (range {cal['rate_min']:.3g}-{cal['rate_max']:.3g}); {'; '.join(cal['hardware'])}"
    )
    return "\n".join(lines)


def hours_text(found: dict, profile: str) -> str:
    kind = {"cpu": "CPU-hours"}.get(found["device_type"], "GPU-hours")
    table = tabulate(
        [[p, hours(h)] for p, h in found["hours_per_paper"].items()] + [["all", hours(found["hours_total"])]],
        headers=["Paper", f"{kind} ({found['seeds']} seeds)"],
        tablefmt="github",
        disable_numparse=True,
    )
    cal = found["calibration"]
    if cal["source"] == "printed":
        at = lambda r: hours(found["hours_total"] * found["rate_units_per_s"] / r)  # noqa: E731
        how = (
            f"calibrated on the papers' printed backprop training times ({len(cal['cells'])} cells; "
            f"{found['device']}): {cal['rate']:.3g} forward-MAC units/s, their median. At the rates of the middle "
            f"half of the cells {at(cal['rate_q3'])}-{at(cal['rate_q1'])} {kind}, at the extremes "
            f"{at(cal['rate_max'])}-{at(cal['rate_min'])} (`bench plan --calibrate printed --compare` lists the "
            "cells)"
        )
    else:
        how = (
            f"calibrated on {found['device']}: {describe(plan.Calibration(**found['device_costs']))} "
            "(bench/cost/method_costs.py, bench/cost/plan.py)"
        )
    return (
        f"{table}\n\nprofile {profile}: {len(found['jobs'])} experiments x {found['seeds']} seeds; {how}. "
        "Learn & Drop and Freezing without drops: an upper bound for them." + companion_text(found, kind)
    )


def companion_text(found: dict, kind: str) -> str:
    """What the companion runs (the other readings of the papers' forks) cost, per paper and reading, within the
    totals above."""
    rows = []
    for paper, by in found.get("companion_hours", {}).items():
        cells = found["hours_per_paper"][paper] - sum(by.values())
        rows += [
            [paper, reading, hours(h), f"{100 * h / cells:.0f} %" if cells else "–"]
            for reading, h in sorted(by.items(), key=lambda x: -x[1])
        ]
    if not rows:
        return ""
    table = tabulate(
        rows,
        headers=["Paper", "Companion reading", kind, "of the cells' runs"],
        tablefmt="github",
        disable_numparse=True,
    )
    return (
        "\n\nOf which companions (a fork's other reading, run beside the cells' experiments; included above; a "
        f"companion that stops at divergence charged the epochs it runs):\n\n{table}"
    )


def memory_text(profile: str, node, jobs: list[dict]) -> tuple[str, list[dict]]:
    """The predicted peaks per paper on `node` and the jobs that do not fit it, with the part that overflows."""
    from bench.cost import resources

    rows, misfits = [], []
    for paper in sorted({j["paper"] for j in jobs}):
        mine = [j for j in jobs if j["paper"] == paper]
        bad = [j for j in mine if j["overflow"]]
        misfits += bad

        def top(key, mine=mine):
            return max(mine, key=lambda job: job[key])

        rows.append(
            [
                paper,
                len(mine),
                *(
                    f"{resources.gb(top(k)[k])} ({top(k)['experiment']})"
                    for k in ("device_bytes", "host_bytes", "disk_bytes")
                ),
                len(bad),
            ]
        )
    gpu = f"one {node.gpu_bytes / 1e9:g} GB GPU and " if node.gpu_bytes else "no GPU, "
    table = tabulate(
        rows,
        headers=["Paper", "Jobs", "Largest device peak", "Largest host peak", "Largest disk", "Do not fit"],
        tablefmt="github",
        disable_numparse=True,
    )
    lines = [
        f"\n\nMemory on {gpu}{node.host_bytes / 1e9:g} GB of host memory (predicted peak per job, "
        "bench/cost/resources.py):\n",
        table,
    ]
    if misfits:
        lines.append(f"\n{len(misfits)} of {len(jobs)} {profile} jobs do not fit:")
        lines += [f"- {j['experiment']}: {'; '.join(j['overflow'])}" for j in misfits]
    else:
        lines.append(f"\nAll {len(jobs)} {profile} jobs fit.")
    recomputing = [j for j in jobs if j.get("recompute")]
    if recomputing:  # bench.cost.resources.recompute_rule: they would not fit without it
        lines.append(
            f"\n{len(recomputing)} recompute their blocks' activations (activation_checkpointing; one more forward "
            "of the blocks per step, in the hours above):"
        )
        lines += [f"- {j['experiment']}: device {resources.gb(j['device_bytes'])}" for j in recomputing]
    offloading = [j for j in jobs if j.get("offload_units")]
    if offloading:  # bench.methods.offload.offload_rule: PredSim jobs that would not fit without it
        lines.append(
            f"\n{len(offloading)} keep some of PredSim's optimizer states on the host (optimizer_offload; copied in "
            "and out around each of those units' steps, in the hours above):"
        )
        lines += [
            f"- {j['experiment']}: device {resources.gb(j['device_bytes'])}, host {resources.gb(j['host_bytes'])}; "
            f"the states of {len(j['offload_units'])} units ({', '.join(j['offload_units'])})"
            for j in offloading
        ]
    return "\n".join(lines), misfits


def progress_line(profile: str, end: bool = False):
    """`bench plan`'s progress on stderr, one line rewritten in place (the probe, then job k of n), in a terminal only;
    None elsewhere (a log gets the result alone). end=True clears the line."""
    if not sys.stderr.isatty():
        return None
    if end:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
        return None

    def tell(done: int, total: int, what: str):
        step = f"job {done + 1}/{total}: {what}" if total else what
        sys.stderr.write(f"\r\033[Kbench plan {profile}: {step}"[:200])
        sys.stderr.flush()

    return tell


def run(
    profile: str,
    seeds: int | None,
    device: str,
    rate: float | None,
    calibrate: str,
    calibration: str | None,
    compare: bool,
    results: str,
    write: str | None,
    fit=None,
) -> str:
    from bench.methods.training import resolve_device
    from bench.run.measure import device_name

    if compare and calibrate == "printed":
        return printed_comparison()
    cal = load_calibration(calibration) if calibration else None
    if compare:
        dev = resolve_device(device)
        cal = cal or plan.calibrate_device(profile, dev, rate)
        rows = plan.compare(profile, cal, results, device)
        if not rows:
            raise BenchError(f"no finished runs under {results}/{profile} to compare with")
        return comparison(rows, cal, cal.device or device_name(dev))
    if profile == "all":
        plans = [plan.plan(p, seeds, device, rate, calibrate, cal) for p in ex.dag_profiles()]
        kind = {"cpu": "CPU-hours"}.get(plans[0]["device_type"], "GPU-hours")
        papers = list(plans[0]["hours_per_paper"])
        table = tabulate(
            [[p, *(hours(f["hours_per_paper"][p]) for f in plans)] for p in papers]
            + [["all", *(hours(f["hours_total"]) for f in plans)]],
            headers=["Paper", *(f"{f['profile']} ({f['seeds']} seeds)" for f in plans)],
            tablefmt="github",
            disable_numparse=True,
        )
        return f"{table}\n\n{kind}, calibrated on {plans[0]['device']}; each profile with its own seeds unless --seeds"
    try:
        found = plan.plan(profile, seeds, device, rate, calibrate, cal, fit=fit, progress=progress_line(profile))
    finally:  # the progress line cleared, before the plan or a line that says why it stopped
        progress_line(profile, end=True)
    if write:
        Path(write).parent.mkdir(parents=True, exist_ok=True)
        Path(write).write_text(json.dumps(found, indent=1))
        print(f"wrote {write}", file=sys.stderr)
    if fit is None:
        return hours_text(found, profile)
    text, misfits = memory_text(profile, fit, found["jobs"])
    return hours_text(found, profile) + text
