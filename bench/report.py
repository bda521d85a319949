"""`bench report`: results/<profile>/cells.csv -> reports/<profile>/index.md, one <paper>.md per paper, figures.

Each paper's report shows its tables as the paper prints them (same rows, same columns), every cell as
"claimed → reproduced". The header names the profile, the hardware and the code version the runs used;
for the smoke profile the first line says that its numbers say nothing about the papers.
"""
import csv
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from tabulate import tabulate

from bench import BenchError
from bench import experiments as ex
from bench.aggregate import load_results
from bench.registry import papers
from bench.runner import write_json_atomic

SMOKE_WARNING = ("> **Smoke profile: these numbers say nothing about the papers.** They come from synthetic "
                 "stand-in data, networks at 1/16 width and a few short epochs; they only show that every step of "
                 "the pipeline runs.")
CHECK_WARNING = ("> **Check profile: a real-data sanity check, not a reproduction.** Real data cut to fixed "
                 "subsets, networks at 1/4 width, two epochs: the numbers show that each method learns, not what "
                 "the papers' settings give.")
ACCURACY_LIKE = {"test_accuracy", "test_error", "time_saving_pct"}


def read_cells(profile: str, results: Path | str) -> list[dict]:
    path = Path(results) / profile / "cells.csv"
    if not path.exists():
        raise BenchError(f"{path} not found: run `bench aggregate --profile {profile}` first")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in ("claimed", "mean", "sd", "ci_low", "ci_high", "diff"):
            r[key] = float(r[key]) if r[key] != "" else math.nan
        r["n"] = int(r["n"])
    return rows


def measurement_markdown(paper: str, cells: list[dict], results: Path | str, profile: str) -> list[str]:
    """The models measured without training, under every convention and counting backend, side by side."""
    from bench import deterministic as det

    found = [json.loads(det.result_path(profile, mid, results).read_text()) for mid, (p, _) in det.measurements().items()
             if p == paper and det.result_path(profile, mid, results).exists()]
    if not found:
        return []
    printed = {r["id"].split(".")[2].replace("-", ""): r for r in cells if r["metric"] == "flops" and r["verdict"]}
    spec = found[0]
    backends = list(spec["conventions"][0]["macs"])
    primary_backend = spec["primary"]["backend"]
    lines = ["## Models measured without training", "",
             f"Primary convention (it gives the cells above their value): `{spec['primary']['convention']}` with the "
             f"`{spec['primary']['backend']}` count. {' '.join(spec['why'].split())}", "",
             "MACs of one forward pass of one sample, counted by ptflops (FLOPs = 2 x MACs); `pytorch`: nn.Module "
             "hooks only (ptflops' classic count); `pytorch+functional`: plus functional and tensor ops (counts an "
             "nn.ReLU twice); `aten`: aten convolutions and matrix products. Parameters counted by the suite, "
             "frozen ones included. Full width in every profile.", ""]
    body = []
    for m in found:
        cell = printed.get(m["model"])
        for conv in m["conventions"]:
            mark = " (primary)" if conv["name"] == m["primary"]["convention"] else ""
            ratio = f"{cell['claimed'] / (conv['macs'][primary_backend] / 1e6):.2f}" if cell else ""
            body.append([m["model"], conv["name"] + mark, "x".join(map(str, conv["input_shape"])), conv["num_classes"],
                         f"{conv['params_total']:,}"] + [f"{conv['macs'][b] / 1e6:,.2f}" for b in backends]
                        + ([cell["printed"], ratio] if cell else []))
    extra = ["Printed FLOPs", f"Printed / MMac ({primary_backend})"] if printed else []
    ratios = sorted(float(row[-1]) for row in body if printed and "(primary)" in row[1])
    if ratios:
        lines += [f"At the primary convention the printed FLOPs are {ratios[0]:.2f} to {ratios[-1]:.2f} times the "
                  "suite's count; the table shows how far each other convention is.", ""]
    lines += [tabulate(body, headers=["Model", "Convention", "Input", "Classes", "Parameters"]
                       + [f"MMac ({b})" for b in backends] + extra, tablefmt="github", disable_numparse=True), ""]
    return lines


def companion_markdown(paper: str, results: Path | str, profile: str) -> list[str]:
    """The runs no cell names that the paper's cells should be read beside (bench.experiments.companions)."""
    path = Path(results) / profile / "companions.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["paper"] == paper]
    if not rows:
        return []
    reasons: dict[str, int] = {}
    body = []
    for r in rows:
        mark = reasons.setdefault(r["why"], len(reasons) + 1)
        num = lambda k: fmt_value(float(r[k])) if r[k] else "–"  # noqa: E731
        acc = num("test_accuracy") + (f" ± {num('test_accuracy_sd')}" if r["test_accuracy_sd"] else "")
        status = r["status"] + (f" (n={r['n']})" if r["n"] != r["seeds_expected"] else "")
        body.append([f"`{r['experiment']}` [{mark}]", f"`{r['beside']}`", status,
                     acc, num("training_time_s"), num("peak_memory_mb"), r["epochs"]])
    lines = ["## Companion runs (no cell of the paper)", "",
             "Runs that the cells above should be read beside; they are not claims of the paper.", "",
             tabulate(body, headers=["Run", "Beside", "Status", "Test accuracy (%)", "Training time (s)",
                                     "Peak memory (MB)", "Epochs trained"], tablefmt="github", disable_numparse=True), ""]
    lines += [f"[{mark}] {why}  " for why, mark in reasons.items()]
    return lines + [""]


def epoch_figures(paper: str, results: Path | str, profile: str, seeds: list[int], out_dir: Path) -> list[Path]:
    """Per-epoch curves of the methods the grid's `epoch_figures` compares (Learn & Drop's Figures 5-6: training
    time and forward MACs per epoch of SGD, Freezing and Dropping), one figure per dataset, one row per model, from
    the first seed with all its runs. A method that does not log a metric per epoch uses its run's constant
    (SGD's forward MACs)."""
    spec = ex.grid(paper).get("epoch_figures")
    if not spec:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    runs = load_results(profile, seeds, results)
    experiments = ex.experiments()
    by_config = defaultdict(dict)
    for (eid, seed), r in sorted(runs.items(), key=lambda kv: kv[0][1]):
        exp = experiments.get(eid)
        if exp and exp.paper == paper and exp.method in spec["methods"] and r.get("status") == "FINISHED":
            by_config[(exp.dataset, exp.model)].setdefault(exp.method, r)
    written = []
    for dataset in sorted({d for d, _ in by_config}):
        models = sorted(m for d, m in by_config if d == dataset)
        fig, axes = plt.subplots(len(models), len(spec["metrics"]), figsize=(4.5 * len(spec["metrics"]), 2.2 * len(models)),
                                 squeeze=False)
        for row, model in zip(axes, models):
            for ax, metric in zip(row, spec["metrics"]):
                for method in spec["methods"]:
                    r = by_config[(dataset, model)].get(method)
                    if r is None:
                        continue
                    fallback = r["metrics"].get(spec.get("constant", {}).get(metric, ""), float("nan"))
                    ys = [e.get(metric, fallback) for e in r["epochs"]]
                    ax.plot(range(1, len(ys) + 1), ys, marker=".", label=spec["labels"].get(method, method))
                ax.set_title(f"{model}: {spec['titles'].get(metric, metric)}", fontsize=9)
                ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
                ax.tick_params(labelsize=7)
        axes[0][0].legend(fontsize=7)
        for ax in axes[-1]:
            ax.set_xlabel("epoch", fontsize=8)
        fig.suptitle(f"{paper} {dataset} ({profile}, seed {next(iter(by_config[(dataset, models[0])].values()))['seed']})",
                     fontsize=10)
        fig.tight_layout()
        path = out_dir / "figures" / f"{paper}_{dataset}_per_epoch.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=80, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written


def run_facts(profile: str, results: Path | str, seeds: list[int]) -> dict:
    runs = list(load_results(profile, seeds, results).values())
    count = lambda key: Counter(r["environment"][key] for r in runs)  # noqa: E731
    return {"runs": len(runs), "devices": count("device"), "code": count("code_version"), "torch": count("torch"),
            "last": max((r["finished"] for r in runs), default="")}


def header(profile: str, facts: dict, seeds: list[int], title: str) -> list[str]:
    prof = ex.profiles()[profile]
    lines = [SMOKE_WARNING, ""] if profile == "smoke" else ([CHECK_WARNING, ""] if profile == "check" else [])
    listing = lambda c: ", ".join(f"{k} ({v} runs)" for k, v in c.most_common()) or "none"  # noqa: E731
    lines += [f"# {title}", "",
              f"- **Profile:** `{profile}`: {' '.join(prof['description'].split())}",
              f"- **Seeds:** {', '.join(map(str, seeds))}; runs found: {facts['runs']} (latest finished {facts['last'] or 'n/a'})",
              f"- **Hardware:** {listing(facts['devices'])}",
              f"- **Code version:** {listing(facts['code'])}; torch {listing(facts['torch'])}",
              "- Generated by `bench report` from `results/" + profile + "/cells.csv` (`bench aggregate`); "
              "every reproduced value traces to its result file and MLflow run (listed in cells.csv).", ""]
    return lines


def fmt_value(v: float) -> str:
    if math.isnan(v):
        return "–"
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"


def fmt_like(value: float, printed: str) -> str:
    """`value` with the printed cell's decimals and thousands separators."""
    number = printed.replace(",", "").split()[0].rstrip("%")
    decimals = len(number.split(".")[1]) if "." in number else 0
    return f"{value:,.{decimals}f}" if "," in printed else f"{value:.{decimals}f}"


def fmt_cell(r: dict, notes: dict) -> str:
    if r["verdict"]:  # computed from the model alone: one exact value
        return f"{r['printed']} → {fmt_like(r['mean'], r['printed'])} ({r['verdict']})"
    if r["status"] in ("MEASURED", "PARTIAL"):
        rep = fmt_value(r["mean"])
        if r["n"] >= 2:
            rep += f" ± {fmt_value(r['sd'])}"
        if r["status"] == "PARTIAL" or r["n"] != 1:
            rep += f" (n={r['n']})"
    else:
        mark = notes.setdefault(r["reason"] or r["status"], len(notes) + 1)
        rep = f"{r['status']} [{mark}]"
    return f"{r['printed']} → {rep}"


def table_markdown(rows: list[dict]) -> list[str]:
    """One paper table, pivoted back to the paper's own rows and columns."""
    row_labels = list(dict.fromkeys(r["row"] for r in rows))
    col_labels = list(dict.fromkeys(r["column"] for r in rows))
    cells = {(r["row"], r["column"]): r for r in rows}
    notes: dict[str, int] = {}
    body = [[label] + [fmt_cell(cells[(label, col)], notes) if (label, col) in cells else "" for col in col_labels]
            for label in row_labels]
    out = [tabulate(body, headers=["Row"] + col_labels, tablefmt="github"), ""]
    for reason, mark in notes.items():
        out.append(f"[{mark}] {reason}  ")
    return out + [""]


def scatter(rows: list[dict], path: Path, title: str) -> bool:
    """Claimed vs reproduced for the percentage cells that have a value; False when there is nothing to plot."""
    pts = [r for r in rows if r["metric"] in ACCURACY_LIKE and not math.isnan(r["mean"])]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for metric in sorted({r["metric"] for r in pts}):
        sel = [r for r in pts if r["metric"] == metric]
        ax.errorbar([r["claimed"] for r in sel], [r["mean"] for r in sel],
                    yerr=[0 if math.isnan(r["sd"]) else r["sd"] for r in sel], fmt="o", ms=4, label=metric)
    ax.plot([0, 100], [0, 100], "k--", lw=0.8, label="reproduced = claimed")
    ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="claimed (%)", ylabel="reproduced, mean over seeds (%)", title=title)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return True


def status_counts(rows: list[dict]) -> dict:
    c = Counter(r["status"] for r in rows)
    out = {s: c.get(s, 0) for s in ("MEASURED", "PARTIAL", "MISSING", "DIVERGED", "FAILED")}
    verdicts = Counter(r["verdict"] for r in rows if r["verdict"])
    out["exact"] = f"{verdicts.get('REPRODUCED', 0)} / {sum(verdicts.values())}"
    return out


def write_reports(profile: str, results: Path | str = "results", reports: Path | str = "reports") -> list[Path]:
    ex.profile_settings(profile)
    cells = read_cells(profile, results)
    seeds = json.loads((Path(results) / profile / "aggregate.json").read_text())["seeds"]
    facts = run_facts(profile, results, seeds)
    out_dir = Path(reports) / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    by_paper = defaultdict(list)
    for r in cells:
        by_paper[r["paper"]].append(r)
    written = []
    index = header(profile, facts, seeds, f"layerwise-bench: claimed vs reproduced ({profile} profile)")
    summary = []
    for paper, meta in papers().items():
        rows = by_paper[paper]
        lines = header(profile, facts, seeds, meta["citation"])
        lines += ["Each cell reads *printed in the paper* → *reproduced* (mean ± sd over seeds). "
                  "MISSING and FAILED cells say why below their table.", ""]
        fig = out_dir / "figures" / f"{paper}_claimed_vs_reproduced.png"
        if scatter(rows, fig, f"{paper} ({profile}): percentage cells"):
            lines += [f"![claimed vs reproduced](figures/{fig.name})", ""]
            written.append(fig)
        for table, tmeta in meta["tables"].items():
            trows = [r for r in rows if r["table"] == table]
            name = "Numbers stated in the text" if table == "text" else f"Table {table}"
            lines += [f"## {name}: {tmeta['caption']}", ""] + table_markdown(trows)
        figures = epoch_figures(paper, results, profile, seeds, out_dir)
        if figures:
            lines += ["## Per epoch", "", ex.grid(paper)["epoch_figures"]["caption"], ""]
            lines += [f"![{f.stem}](figures/{f.name})" for f in figures] + [""]
            written += figures
        lines += companion_markdown(paper, results, profile)
        lines += measurement_markdown(paper, rows, results, profile)
        path = out_dir / f"{paper}.md"
        path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
        written.append(path)
        summary.append([f"[{paper}]({paper}.md)", meta["citation"], len(rows), *status_counts(rows).values()])
    index += ["## Cells per paper", "",
              tabulate(summary, headers=["Paper", "Citation", "Cells", "Measured", "Partial", "Missing", "Diverged", "Failed",
                                         "Exact cells reproduced"], tablefmt="github"), "",
              "Exact cells are the parameter and FLOPs counts, computed from the models without training: "
              "REPRODUCED when the suite's count rounds to the printed value.", "",
              "MISSING cells belong to methods, models, datasets or measurements the suite does not cover yet; "
              "each paper's report gives the reason per cell.", ""]
    path = out_dir / "index.md"
    path.write_text("\n".join(index).rstrip() + "\n", encoding="utf-8")
    written = [path] + written
    # The workflow's final target: it lives with the results, so that a fresh clone (whose reports/ are committed
    # but whose results/ are not) regenerates the reports, and a second run with nothing changed does nothing.
    manifest = Path(results) / profile / "reports.json"
    write_json_atomic(manifest, {"profile": profile, "reports": [p.as_posix() for p in written]})
    return written + [manifest]
