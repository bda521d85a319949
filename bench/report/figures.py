"""The reports' figures (matplotlib, PNG, byte-stable: no timestamps or version in the metadata).

* claimed vs reproduced, one panel per metric of a paper: each cell at (printed value, reproduced mean) with its
  95 % interval, coloured by verdict, over its band (bench/tolerances.yaml);
* per-epoch curves of the runs a grid's `epoch_figures` names (Learn & Drop's Figures 5-6), their y axes from 0.
"""

import math
from collections import defaultdict
from pathlib import Path

from bench import experiments as ex
from bench.run.results import load_results

PANEL_METRICS = [
    "test_accuracy",
    "test_error",
    "time_saving_pct",
    "flops_reduction_pct",
    "train_time",
    "memory",
    "flops",
]
VERDICT_COLOURS = {
    "REPRODUCED": "tab:green",
    "BETTER": "tab:blue",
    "NOT REPRODUCED": "tab:red",
    "INCONCLUSIVE": "tab:orange",
    "NOT COMPARABLE": "tab:gray",
}
TITLES = {
    "test_accuracy": "test accuracy (%)",
    "test_error": "test error (%)",
    "time_saving_pct": "time saving (%)",
    "flops_reduction_pct": "FLOPs reduction (%)",
    "train_time": "training time",
    "memory": "memory",
    "flops": "FLOPs (MMac)",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, metadata={"Software": None})
    _pyplot().close(fig)


def claimed_vs_reproduced(rows: list[dict], path: Path, title: str) -> bool:
    """One panel per metric with reproduced values; False when no cell has one."""
    panels = [m for m in PANEL_METRICS if any(r["metric"] == m and not math.isnan(r["mean"]) for r in rows)]
    if not panels:
        return False
    plt = _pyplot()
    cols = min(3, len(panels))
    rows_ = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows_, cols, figsize=(4.2 * cols, 4.2 * rows_), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, panels):
        pts = [r for r in rows if r["metric"] == metric and not math.isnan(r["mean"])]
        log = metric in ("train_time", "memory", "flops")
        lo = min(min(r["claimed"], r["mean"]) for r in pts)
        hi = max(max(r["claimed"], r["mean"]) for r in pts)
        lo, hi = (lo / 2, hi * 2) if log else (lo - 0.05 * (hi - lo) - 1, hi + 0.05 * (hi - lo) + 1)
        xs = [lo * (hi / lo) ** (i / 100) if log else lo + (hi - lo) * i / 100 for i in range(101)]
        banded = [r for r in pts if r["band_high"] > r["band_low"]]
        if banded:  # each cell's own band (bench/tolerances.yaml: it depends on the printed value and its digits)
            ax.vlines(
                [r["claimed"] for r in banded],
                [r["band_low"] for r in banded],
                [r["band_high"] for r in banded],
                color="0.8",
                lw=5,
                label="band of each cell",
            )
        ax.plot(xs, xs, "k--", lw=0.7)
        for verdict in sorted({r["verdict"] for r in pts}):
            sel = [r for r in pts if r["verdict"] == verdict]
            err = [
                [0 if math.isnan(r["ci_low"]) else r["mean"] - r["ci_low"] for r in sel],
                [0 if math.isnan(r["ci_high"]) else r["ci_high"] - r["mean"] for r in sel],
            ]
            ax.errorbar(
                [r["claimed"] for r in sel],
                [r["mean"] for r in sel],
                yerr=err,
                fmt="o",
                ms=3.5,
                color=VERDICT_COLOURS.get(verdict, "black"),
                label=f"{verdict} ({len(sel)})",
            )
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        units = sorted({r["unit"] for r in pts})
        ax.set(
            xlim=(lo, hi),
            ylim=(lo, hi),
            xlabel=f"printed ({', '.join(units)})",
            ylabel="reproduced: mean, 95 % interval",
        )
        ax.set_title(TITLES[metric], fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return True


def epoch_figures(paper: str, results: Path | str, profile: str, seeds: list[int], out_dir: Path) -> list[Path]:
    """Per-epoch curves of the methods the grid's `epoch_figures` compares (Learn & Drop's Figures 5-6: training
    time and forward MACs per epoch of SGD, Freezing and Dropping), one figure per dataset, one row per model, from
    the first seed with all its runs. A method that does not log a metric per epoch uses its run's constant
    (SGD's forward MACs)."""
    spec = ex.grid(paper).get("epoch_figures")
    if not spec:
        return []
    import matplotlib.ticker

    plt = _pyplot()
    runs = load_results(profile, seeds, results)
    experiments = ex.experiments()
    by_config = defaultdict(dict)
    for (eid, _seed), r in sorted(runs.items(), key=lambda kv: kv[0][1]):
        exp = experiments.get(eid)
        if exp and exp.paper == paper and exp.method in spec["methods"] and r.get("status") == "FINISHED":
            by_config[(exp.dataset, exp.model)].setdefault(exp.method, r)
    written = []
    for dataset in sorted({d for d, _ in by_config}):
        models = sorted(m for d, m in by_config if d == dataset)
        fig, axes = plt.subplots(
            len(models), len(spec["metrics"]), figsize=(4.5 * len(spec["metrics"]), 2.2 * len(models)), squeeze=False
        )
        for row, model in zip(axes, models):
            for ax, metric in zip(row, spec["metrics"]):
                for method in spec["methods"]:
                    r = by_config[(dataset, model)].get(method)
                    if r is None:
                        continue
                    fallback = r["metrics"].get(spec.get("constant", {}).get(metric, ""), float("nan"))
                    ys = [e.get(metric, fallback) for e in r.get("epochs", [])]
                    ax.plot(range(1, len(ys) + 1), ys, marker=".", label=spec["labels"].get(method, method))
                ax.set_title(f"{model}: {spec['titles'].get(metric, metric)}", fontsize=9)
                ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
                # from zero, in plain numbers (35M, not an offset '1e7' scale): times and MACs are amounts, and an
                # axis cut just below the curves makes a 2 % drop look like a cliff
                ax.set_ylim(bottom=0)
                ax.yaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))
                ax.tick_params(labelsize=7)
        axes[0][0].legend(fontsize=7)
        for ax in axes[-1]:
            ax.set_xlabel("epoch", fontsize=8)
        fig.suptitle(
            f"{paper} {dataset} ({profile}, seed {next(iter(by_config[(dataset, models[0])].values()))['seed']})",
            fontsize=10,
        )
        fig.tight_layout()
        path = out_dir / "figures" / f"{paper}_{dataset}_per_epoch.png"
        _save(fig, path)
        written.append(path)
    return written
