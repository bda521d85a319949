"""`bench report`: results/<profile>/{cells,headlines,companions}.csv -> reports/<profile>/index.md, one <paper>.md
per paper, figures (bench/figures.py).

The index has one line per paper (cells with values, verdict counts, headline claims held, audit findings). A paper's
report starts with its summary (scope, what reproduced, what did not, what could not be judged and why), then its
tables as the paper prints them (same rows, same columns), every cell "printed → reproduced mean ± sd (n)" with its
verdict, then the headline claims, per-epoch figures, companion runs, model measurements and the choices made where
the paper is silent. The header names the profile, the hardware and the code version the runs used; for the smoke
and check profiles the first line says that their numbers say nothing about the papers. Output is byte-stable:
fixed ordering and number formats, PNGs without timestamps.
"""
import csv
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from tabulate import tabulate

from bench import BenchError
from bench import experiments as ex
from bench import verdicts as vd
from bench.aggregate import load_results
from bench.figures import claimed_vs_reproduced, epoch_figures
from bench.registry import papers, printed_decimals
from bench.runner import write_json_atomic

SMOKE_WARNING = ("> **Smoke profile: these numbers say nothing about the papers.** They come from synthetic "
                 "stand-in data, networks at 1/16 width and a few short epochs; they only show that every step of "
                 "the pipeline runs.")
CHECK_WARNING = ("> **Check profile: a real-data sanity check, not a reproduction.** Real data cut to fixed "
                 "subsets, networks at 1/4 width, two epochs: the numbers show that each method learns, not what "
                 "the papers' settings give.")


def read_cells(profile: str, results: Path | str) -> list[dict]:
    path = Path(results) / profile / "cells.csv"
    if not path.exists():
        raise BenchError(f"{path} not found: run `bench aggregate --profile {profile}` first")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in ("claimed", "mean", "sd", "ci_low", "ci_high", "diff", "band_low", "band_high", "p_adjusted"):
            r[key] = float(r[key]) if r[key] != "" else math.nan
        r["n"], r["seeds_expected"] = int(r["n"]), int(r["seeds_expected"])
    return rows


def measurement_markdown(paper: str, cells: list[dict], results: Path | str, profile: str) -> list[str]:
    """The models measured without training, under every convention and counting backend, side by side."""
    from bench import deterministic as det
    from bench.aggregate import load_measurements

    found = [m for mid, m in load_measurements(profile, results).items() if det.measurements()[mid][0] == paper]
    if not found:
        return []
    printed = {r["id"].split(".")[2].replace("-", ""): r for r in cells if r["metric"] == "flops" and r["seeds_expected"] == 0}
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


def run_facts(found: dict, paper: str | None = None) -> dict:
    """Counts over the valid result files `found` (load_results' dict), of one paper's experiments with `paper`."""
    runs = [r for (eid, _), r in found.items() if paper is None or eid.split("-")[0] == paper]
    count = lambda key: Counter(r["environment"].get(key, "not recorded") for r in runs)  # noqa: E731
    return {"runs": len(runs), "devices": count("device"), "code": count("code_version"), "torch": count("torch"),
            "precision": count("precision"), "last": max((r["finished"] for r in runs), default="")}


def learning_markdown(found: dict) -> list[str]:
    """Per method: are its runs above chance (bench.learning)? A method at chance is broken or untrainable here."""
    from bench import learning

    rows = learning.per_method(found)
    if not rows:
        return []
    body = []
    for r in rows:
        low = r["lowest"]
        body.append([f"`{r['method']}`", r["finished"], f"{r['above']} / {r['finished']}",
                     f"{r['median_ratio']:.1f}x" if r["finished"] else "–",
                     f"{low[3]:.1f} % = {low[0]:.1f}x (`{low[2]}`)" if low else "–", r["unfinished"]])
    return ["## Does each method learn?", "",
            "Each finished run's test accuracy against chance (1 / its dataset's classes): above chance when a "
            f"one-sided binomial test on its own test samples gives p < {learning.ALPHA} (`bench/learning.py`). "
            "A method whose runs sit at chance has stopped learning, whatever its cells say.", "",
            tabulate(body, headers=["Method", "Finished runs", "Above chance", "Median accuracy / chance",
                                    "Lowest (run)", "Failed or diverged"], tablefmt="github",
                     disable_numparse=True), ""]


def restriction(profile: str, only: str) -> list[str]:
    """The header line of a DAG restricted with only=: which experiments ran, of how many."""
    if not only:
        return []
    import fnmatch

    patterns = [p.strip() for p in only.split(",") if p.strip()]
    targets = ex.targets(profile)
    ran = [t for t in targets if any(fnmatch.fnmatchcase(t, p) for p in patterns)]
    return [f"- **Restricted run:** `only={only}`: {len(ran)} of the profile's {len(targets)} experiments; every "
            "other cell reads MISSING here because it was not run, not because it failed"]


def header(profile: str, facts: dict, seeds: list[int], title: str, only: str = "") -> list[str]:
    prof = ex.profiles()[profile]
    lines = [SMOKE_WARNING, ""] if profile == "smoke" else ([CHECK_WARNING, ""] if profile == "check" else [])
    listing = lambda c: ", ".join(f"{k} ({v} runs)" for k, v in c.most_common()) or "none"  # noqa: E731
    lines += [f"# {title}", "",
              f"- **Profile:** `{profile}`: {' '.join(prof['description'].split())}",
              f"- **Seeds:** {', '.join(map(str, seeds))}; runs found: {facts['runs']} (latest finished {facts['last'] or 'n/a'})",
              f"- **Hardware:** {listing(facts['devices'])}",
              f"- **Code version:** {listing(facts['code'])}; torch {listing(facts['torch'])}",
              f"- **Precision:** {listing(facts['precision'])}" + (
                  "; **bf16 autocast is a deviation from the papers**, which trained in fp32: its numbers may "
                  "differ for that reason alone" if facts["precision"].get("bf16") else ""),
              *restriction(profile, only),
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
    decimals = printed_decimals(printed)
    return f"{value:,.{decimals}f}" if "," in printed else f"{value:.{decimals}f}"


SHORT = {"REPRODUCED": "**REP**", "BETTER": "**BETTER**", "NOT REPRODUCED": "**NOT REP**", "INCONCLUSIVE": "INCONCL.",
         "NOT COMPARABLE": "N/C"}
VERDICT_ORDER = ["REPRODUCED", "BETTER", "NOT REPRODUCED", "INCONCLUSIVE", "NOT COMPARABLE", "MISSING", "FAILED",
                 "DIVERGED"]
def how_to_read() -> list[str]:
    """The legend: the bands, the tests, the decision rule and its guarantee (from bench/tolerances.yaml)."""
    bands = "; ".join(f"{m.replace('_', ' ')} {vd.describe_band(m)}" for m in vd.tolerances()["metrics"])
    return [
        "**How to read a verdict.** A cell reads *printed* → *reproduced mean ± sd (n seeds)* and its verdict, judged "
        "against a band around the printed value fixed in advance per metric (`bench/tolerances.yaml`, with the "
        f"reasoning: {bands}; every band widened by half a unit of the printed last digit). With two or more seeds, "
        "one-sided t-tests ask whether the mean lies inside the band (TOST), above it or below it; the decision "
        f"rule is {vd.guarantee()}:",
        "**REP** (REPRODUCED: inside the band), **BETTER** (significantly beyond it on the better side), "
        "**NOT REP** (significantly beyond it on the worse side), INCONCL. (none significant; with the seeds that "
        "would likely settle it, exact TOST power 0.8 at the observed mean and spread; also one seed, and seeds with "
        "identical values, which are flagged), N/C (NOT COMPARABLE: a profile that is not the papers' settings, or "
        "an absolute time or memory measured on other hardware than the paper's), MISSING / FAILED / DIVERGED (no "
        "value, or a NaN/infinite one; the note says why). Counts computed from the model alone are REP when they "
        "round to the printed value. The papers print single values without seeds, so every printed value is a "
        "point.", ""]


def fmt_cell(r: dict, notes: dict) -> str:
    """printed → reproduced, with the verdict (and a numbered note where the verdict needs a reason)."""
    if r["seeds_expected"] == 0 and r["n"]:  # computed from the model alone: one exact value
        return f"{r['printed']} → {fmt_like(r['mean'], r['printed'])} {SHORT[r['verdict']]}"
    rep = ""
    if r["n"]:
        rep = fmt_value(r["mean"]) + (f" ± {fmt_value(r['sd'])}" if r["n"] >= 2 else "")
        if r["status"] == "PARTIAL" or r["n"] != 1:
            rep += f" (n={r['n']})"
    tag = SHORT.get(r["verdict"], r["verdict"])
    if r["verdict"] == "INCONCLUSIVE":
        tag += f" (seeds: {r['seeds_needed']})" if r["seeds_needed"] else ""
    elif r["verdict"] not in ("REPRODUCED", "BETTER", "NOT REPRODUCED"):
        tag += f" [{notes.setdefault(r['reason'] or r['verdict'], len(notes) + 1)}]"
    runs = f" [runs](#{run_anchor(r['experiment'])})" if has_runs(r) else ""
    return f"{r['printed']} → {rep + ' ' if rep else ''}{tag}{runs}"


def has_runs(r: dict) -> bool:
    """A cell trained by runs whose result files count (measured, or failed/diverged for good)."""
    return bool(r.get("experiment")) and r["seeds_expected"] > 0 and r["status"] in RUN_STATUSES


RUN_STATUSES = ("MEASURED", "PARTIAL", "FAILED", "DIVERGED")


def run_anchor(experiment: str) -> str:
    return f"run-{experiment}"


MLFLOW_UI = "http://127.0.0.1:5000"  # where `bench ui` serves the store (its default address)


def runs_markdown(rows: list[dict], found: dict, results: Path | str, page_dir: Path, profile: str) -> list[str]:
    """The runs behind the cells: per experiment, each seed's result file (relative link) and MLflow run (its page
    in `bench ui`); a cell's [runs] link points here."""
    import os

    experiments = list(dict.fromkeys(e for r in rows if has_runs(r) for e in (r["experiment"], r["baseline_experiment"])
                                     if e))
    if not experiments:
        return []
    seeds_of = defaultdict(list)  # experiment -> [(seed, result)], read once
    for (e, seed), res in sorted(found.items()):
        seeds_of[e].append((seed, res))
    body = []
    for eid in experiments:
        links = []
        for seed, res in seeds_of[eid]:
            path = Path(results) / profile / "runs" / eid / f"seed{seed}.json"
            rel = os.path.relpath(path, page_dir).replace(os.sep, "/")
            m = res.get("mlflow") or {}
            run = (f"[MLflow]({MLFLOW_UI}/#/experiments/{m['experiment_id']}/runs/{m['run_id']})"
                   if m.get("experiment_id") and m.get("run_id") else f"MLflow `{m.get('run_id') or 'none'}`")
            links.append(f"seed {seed}: [{res['status'].lower()}]({rel}) · {run}")
        cells = sum(eid in (r["experiment"], r["baseline_experiment"]) for r in rows)
        body.append([f'<a id="{run_anchor(eid)}"></a>`{eid}`', cells, "<br>".join(links) or "no result file"])
    return ["## Runs behind the cells", "",
            "Each cell's [runs] link lands here: its experiment's result file per seed (the source of truth, under "
            f"`{Path(results).as_posix()}/`, not committed) and its MLflow run (open the store with `bench ui`, "
            f"then follow the link to {MLFLOW_UI}).", "",
            "<details><summary>" + f"{len(experiments)} experiments" + "</summary>", "",
            tabulate(body, headers=["Experiment", "Cells", "Result file · MLflow run, per seed"], tablefmt="github",
                     disable_numparse=True), "", "</details>", ""]


def table_markdown(rows: list[dict]) -> list[str]:
    """One paper table, pivoted back to the paper's own rows and columns."""
    row_labels = list(dict.fromkeys(r["row"] for r in rows))
    col_labels = list(dict.fromkeys(r["column"] for r in rows))
    cells = {(r["row"], r["column"]): r for r in rows}
    notes: dict[str, int] = {}
    body = [[label] + [fmt_cell(cells[(label, col)], notes) if (label, col) in cells else "" for col in col_labels]
            for label in row_labels]
    out = [tabulate(body, headers=["Row"] + col_labels, tablefmt="github", disable_numparse=True), ""]
    for reason, mark in notes.items():
        out.append(f"[{mark}] {reason}  ")
    return out + [""]


def verdict_counts(rows: list[dict]) -> dict[str, int]:
    c = Counter(r["verdict"] for r in rows)
    return {v: c.get(v, 0) for v in VERDICT_ORDER}


def _label(r: dict) -> str:
    table = "text" if r["table"] == "text" else f"Table {r['table']}"
    return f"{table} {r['row']}, {r['column']}"


def _listing(rows: list[dict], limit: int = 12) -> str:
    value = lambda r: fmt_like(r["mean"], r["printed"]) if r["seeds_expected"] == 0 else fmt_value(r["mean"])  # noqa: E731
    items = [f"{_label(r)}: {r['printed']} → {value(r)}" for r in rows[:limit]]
    return "; ".join(items) + (f"; and {len(rows) - limit} more (see the tables)" if len(rows) > limit else "")


def summary_markdown(paper: str, meta: dict, rows: list[dict], heads: list[dict], audit_count: int) -> list[str]:
    """The paper's verdicts in a few lines: scope, what reproduced, what did not, what could not be compared."""
    model = [r for r in rows if r["seeds_expected"] == 0]
    counts = verdict_counts(rows)
    lines = ["## Summary", "",
             f"- **Scope:** {len(rows)} cells in {len(meta['tables'])} tables (the text's numbers count as one): "
             f"{len(model)} computed from the model alone, {len(rows) - len(model)} from training runs; "
             f"{sum(1 for r in rows if r['n'])} have a reproduced value.",
             f"- **The paper's numbers:** {meta.get('seeds', 'not stated')}, so each printed value is treated as a "
             f"point. Hardware: {meta.get('hardware', 'not stated')}.",
             "- **Verdicts:** " + ", ".join(f"{v} {n}" for v, n in counts.items() if n)
             + f" (decision rule: {vd.rule()})."]
    identical = [r for r in rows if r.get("flag") == "identical seeds"]
    if identical:
        lines.append(f"- **Identical seeds ({len(identical)} cells), not judged:** "
                     + "; ".join(_label(r) for r in identical[:12]) + ("; ..." if len(identical) > 12 else "")
                     + ". Every seed gave the same value: the seed most likely never reached these runs.")
    for verdict, title in (("REPRODUCED", "Reproduced"), ("BETTER", "Better than printed"),
                           ("NOT REPRODUCED", "Not reproduced")):
        sel = [r for r in rows if r["verdict"] == verdict]
        if sel:
            lines.append(f"- **{title} ({len(sel)}):** {_listing(sel)}.")
    unjudged = Counter((r["verdict"], r["reason"]) for r in rows
                       if r["verdict"] in ("INCONCLUSIVE", "NOT COMPARABLE", "MISSING", "FAILED", "DIVERGED"))
    if unjudged:
        lines.append("- **Not judged:** " + "; ".join(f"{n} {v} ({why or 'no reason given'})" for (v, why), n in
                                                      sorted(unjudged.items(), key=lambda kv: (-kv[1], kv[0]))) + ".")
    if heads:
        c = Counter(h["verdict"] for h in heads)
        lines.append(f"- **Headline claims ({len(heads)}):** on the runs "
                     + ", ".join(f"{v} {c[v]}" for v in ("HOLDS", "REVERSED", "NOT SIGNIFICANT", "NOT COMPARABLE",
                                                         "MISSING", "DIVERGED") if c[v])
                     + (" (the tests on these runs: " + ", ".join(f"{v} {n}" for v, n in sorted(
                         Counter(h["test"] for h in heads).items())) + ")" if c["NOT COMPARABLE"] else "")
                     + f"; as printed, {sum(h['as_printed'] == 'yes' for h in heads)} of {len(heads)} hold.")
    lines.append(f"- **Audit of the printed numbers:** {audit_count} findings ([audit](../audit.md)).")
    return lines + [""]


def cover(ids: list[str]) -> str:
    """Cell ids as the tables, rows and columns they cover: "Table 1 rows VGG-11, VGG-16 x columns A, B (4 cells)",
    or per column where they do not fill a rectangle; a short list stays a list of ids."""
    if len(ids) <= 3:
        return ", ".join(ids)
    from bench.registry import load_claims

    by_id = {c.id: c for c in load_claims()}
    tables: dict[str, list] = {}
    for i in ids:
        c = by_id.get(i)
        if c is None:
            return ", ".join(ids)
        tables.setdefault(c.table, []).append(c)
    parts = []
    for table, cs in tables.items():
        name = "text" if table == "text" else f"Table {table}"
        rows, cols = list(dict.fromkeys(c.row for c in cs)), list(dict.fromkeys(c.column for c in cs))
        if len(cs) == len(rows) * len(cols):
            what = lambda kind, labels: f"{kind}{'s' if len(labels) > 1 else ''} {', '.join(labels)}"  # noqa: E731
            parts.append(f"{name} {what('row', rows)} x {what('column', cols)} ({len(cs)} cells)")
        else:
            for col in cols:
                mine = [c.row for c in cs if c.column == col]
                parts.append(f"{name} column {col}, rows {', '.join(mine)}")
    return "; ".join(parts)


RELATION_TEXT = {"greater": "A > B", "less": "A < B", "at_least": "A ≥ B − {m}", "at_most": "A ≤ B + {m}",
                 "within": "|A − B| ≤ {m}"}


def headline_markdown(paper: str, heads: list[dict]) -> list[str]:
    from bench.headlines import load_headlines

    if not heads:
        return []
    defs = {h.id: h for h in load_headlines()}
    body, details = [], []
    for r in heads:
        h = defs[r["id"]]
        if h.relation == "ranking":
            rel = f"ranking of {len(h.items)} groups, {'lowest' if h.lower_is_better else 'highest'} first"
            sides = "; ".join(f"{i + 1}: {cover(g)}" for i, g in enumerate(h.items))
        else:
            rel = RELATION_TEXT[h.relation].format(m=f"{h.margin:g}")
            rel = rel.replace("B", f"{h.value:g}") if not h.b else rel
            rel += ", each pair" if h.pairwise else ""
            sides = f"A: {cover(h.a)}" + (f"; B: {cover(h.b)}" if h.b else "")
        diff = fmt_value(r["diff"]) if not math.isnan(r["diff"]) else "–"
        p = f"{r['p_adjusted']:.3g}" if not math.isnan(r["p_adjusted"]) else "–"
        verdict = r["verdict"] + (f" (test on these runs: {r['test']})" if r["verdict"] == "NOT COMPARABLE" else "")
        verdict += f" ({r['pairs']} pairs)" if r.get("pairs") else ""
        body.append([h.id, h.where, f"“{h.wording}”", rel, f"{r['as_printed']} ({r['printed_numbers']})",
                     f"{diff} (n={r['n']})", p, verdict])
        details.append(f"- `{h.id}`: {sides}." + (f" {h.note}" if h.note else "")
                       + (f" *{r['reason']}*" if r["reason"] else ""))
    return (["## Headline claims", "",
             "What the paper says its tables show, tested on the runs (per-seed differences A − B, one-sided t-tests "
             "for the relation and its reverse; the claim's two-sided p = 2 × the smaller, corrected over the "
             f"paper's claims by {vd.rule_name()}): HOLDS, REVERSED or NOT "
             "SIGNIFICANT; a pairwise claim with only some pairs run is tested on those and says how many "
             "(\"k of n pairs\"). *As printed* applies the relation to the paper's own numbers. Claims: "
             "`bench/claims/headlines.yaml`.", "",
             tabulate(body, headers=["Claim", "Where", "The paper says", "Relation", "As printed", "Runs: A − B",
                                     f"p ({vd.correction().upper()})", "Verdict"], tablefmt="github",
                      disable_numparse=True), ""]
            + details + [""])


def choices_markdown(paper: str) -> list[str]:
    """The grid's settings whose source is a choice (the paper is silent or contradicts itself)."""
    items = []
    for entry in ex.grid(paper).get("settings", []):
        source = " ".join(entry.get("source", "").split())
        if "choice" in source:
            where = ", ".join(f"{k}={v}" for k, v in entry.get("match", {}).items()) or "every experiment"
            items.append(f"- *{where}*: {source}")
    if not items:
        return []
    return (["## Choices made where the paper is silent", "",
             f"From `bench/grids/{paper}.yaml` (every setting there names its source; these are the choices). The "
             "verdicts' tolerances are choices too: `bench/tolerances.yaml`, with the reasoning.", ""] + items + [""])


def read_headlines(profile: str, results: Path | str) -> list[dict]:
    path = Path(results) / profile / "headlines.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in ("diff", "p_holds", "p_reversed", "p_two_sided", "p_adjusted"):
            r[key] = float(r[key]) if r[key] != "" else math.nan
    return rows


def write_reports(profile: str, results: Path | str = "results", reports: Path | str = "reports",
                  only: str = "") -> list[Path]:
    """reports/<profile>/index.md and one page per paper (with figures); `only`: the workflow's restriction, said
    in every header. Figures of an earlier run that no page links any more are removed."""
    from bench.audit import findings

    ex.profile_settings(profile)
    cells = read_cells(profile, results)
    heads = read_headlines(profile, results)
    seeds = json.loads((Path(results) / profile / "aggregate.json").read_text())["seeds"]
    found = load_results(profile, seeds, results)  # read and checked once, counted per paper below
    facts = run_facts(found)
    audit = findings()
    out_dir = Path(reports) / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    index = header(profile, facts, seeds, f"layerwise-bench: claimed vs reproduced ({profile} profile)", only)
    summary = []
    for paper, meta in papers().items():
        rows = [r for r in cells if r["paper"] == paper]
        mine = [h for h in heads if h["paper"] == paper]
        lines = header(profile, run_facts(found, paper), seeds, meta["citation"], only)
        lines += summary_markdown(paper, meta, rows, mine, len(audit.get(paper, [])))
        fig = out_dir / "figures" / f"{paper}_claimed_vs_reproduced.png"
        if claimed_vs_reproduced(rows, fig, f"{paper} ({profile} profile): printed vs reproduced, by verdict"):
            lines += [f"![claimed vs reproduced, with the tolerance bands](figures/{fig.name})", ""]
            written.append(fig)
        lines += how_to_read()
        for table, tmeta in meta["tables"].items():
            trows = [r for r in rows if r["table"] == table]
            name = "Numbers stated in the text" if table == "text" else f"Table {table}"
            lines += [f"## {name}: {tmeta['caption']}", ""] + table_markdown(trows)
        lines += headline_markdown(paper, mine)
        figures = epoch_figures(paper, results, profile, seeds, out_dir)
        if figures:
            lines += ["## Per epoch", "", ex.grid(paper)["epoch_figures"]["caption"], ""]
            lines += [f"![{f.stem}](figures/{f.name})" for f in figures] + [""]
            written += figures
        lines += runs_markdown(rows, found, results, out_dir, profile)
        lines += companion_markdown(paper, results, profile)
        lines += measurement_markdown(paper, rows, results, profile)
        lines += choices_markdown(paper)
        path = out_dir / f"{paper}.md"
        path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
        written.append(path)
        c = verdict_counts(rows)
        missing = sum(h["verdict"] in ("MISSING", "DIVERGED") for h in mine)  # untested, not 'not held'
        held = ("N/C" if mine and all(h["verdict"] == "NOT COMPARABLE" for h in mine)
                else f"{sum(h['verdict'] == 'HOLDS' for h in mine)} / {len(mine)}"
                + (f", {missing} without runs" if missing else ""))
        summary.append([f"[{paper}]({paper}.md)", len(rows), sum(1 for r in rows if r["n"]), c["REPRODUCED"],
                        c["BETTER"], c["NOT REPRODUCED"], c["INCONCLUSIVE"], c["NOT COMPARABLE"],
                        c["MISSING"] + c["FAILED"] + c["DIVERGED"],
                        f"{held} (as printed: {sum(h['as_printed'] == 'yes' for h in mine)} / {len(mine)})",
                        len(audit.get(paper, []))])
    index += ["## Verdicts per paper", "",
              tabulate(summary, headers=["Paper", "Cells", "With values", "Reproduced", "Better", "Not reproduced",
                                         "Inconclusive", "Not comparable", "Missing / failed / diverged",
                                         "Headline claims held", "Audit findings"],
                       tablefmt="github", disable_numparse=True), "",
              "Papers: " + "; ".join(f"**{p}**: {m['citation']}" for p, m in papers().items()) + ".", "",
              "The audit of the papers' own printed numbers (no training): [audit.md](../audit.md).", ""]
    index += learning_markdown(found) + how_to_read()
    path = out_dir / "index.md"
    path.write_text("\n".join(index).rstrip() + "\n", encoding="utf-8")
    written = [path] + written
    for old in sorted((out_dir / "figures").glob("*.png")):  # an earlier run's figures no page links any more
        if old not in written:
            old.unlink()
    # The workflow's final target: it lives with the results, so that a fresh clone (whose reports/ are committed
    # but whose results/ are not) regenerates the reports, and a second run with nothing changed does nothing.
    manifest = Path(results) / profile / "reports.json"
    write_json_atomic(manifest, {"profile": profile, "reports": [p.as_posix() for p in written]})
    return written + [manifest]
