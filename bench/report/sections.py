"""The sections of a paper's page beside its tables: the headline claims, the runs behind the cells, the companion
runs, the models measured without training, and the choices made where the paper is silent; and the index's
"Does each method learn?".
"""

import csv
import math
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from bench import experiments as ex
from bench.report.tables import fmt_value, has_runs, run_anchor
from bench.verdicts import cells as vd


def cover(ids: list[str]) -> str:
    """Cell ids as the tables, rows and columns they cover: "Table 1 rows VGG-11, VGG-16 x columns A, B (4 cells)",
    or per column where they do not fill a rectangle; a short list stays a list of ids."""
    if len(ids) <= 3:
        return ", ".join(ids)
    from bench.claims.registry import load_claims

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


RELATION_TEXT = {
    "greater": "A > B",
    "less": "A < B",
    "at_least": "A ≥ B − {m}",
    "at_most": "A ≤ B + {m}",
    "within": "|A − B| ≤ {m}",
}


def headline_markdown(paper: str, heads: list[dict]) -> list[str]:
    from bench.claims.headlines import load_headlines

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
        # a partial pairwise claim's verdict says how many pairs it was tested on ("holds on k of n pairs ...")
        verdict += f" ({r['pairs']} pairs)" if r.get("pairs") and "pairs" not in r["verdict"] else ""
        under = (r.get("holds_under") or "–") + (f"; {r['readings_note']}" if r.get("readings_note") else "")
        body.append(
            [
                h.id,
                h.where,
                f"“{h.wording}”",
                rel,
                f"{r['as_printed']} ({r['printed_numbers']})",
                f"{diff} (n={r['n']})",
                p,
                verdict,
                under,
            ]
        )
        details.append(
            f"- `{h.id}`: {sides}."
            + (f" {h.note}" if h.note else "")
            + (f" *{r['reason']}*" if r["reason"] else "")
            + (f" Readings: {r['readings']}." if r.get("readings") else "")
        )
    return (
        [
            "## Headline claims",
            "",
            "What the paper says its tables show, tested on the runs (per-seed differences A − B, one-sided t-tests "
            "for the relation and its reverse; the claim's two-sided p = 2 × the smaller, corrected over the "
            f"paper's claims by {vd.rule_name()}): HOLDS, REVERSED or NOT "
            "SIGNIFICANT; a pairwise claim with only some pairs run is tested on those and says how many "
            '("k of n pairs"). *As printed* applies the relation to the paper\'s own numbers. Claims: '
            "`bench/claims/headlines.yaml`. *Holds under* tests the claim again under every reading of the paper "
            "its cells have in this profile (the companion runs' forks, each with what states it: the paper's "
            "text, the authors' code, or neither, a choice) and counts the readings where the test HOLDS; each "
            "claim's verdict under every reading is listed below the table.",
            "",
            tabulate(
                body,
                headers=[
                    "Claim",
                    "Where",
                    "The paper says",
                    "Relation",
                    "As printed",
                    "Runs: A − B",
                    f"p ({vd.correction().upper()})",
                    "Verdict",
                    "Holds under (readings)",
                ],
                tablefmt="github",
                disable_numparse=True,
            ),
            "",
        ]
        + details
        + [""]
    )


MLFLOW_UI = "http://127.0.0.1:5000"  # where `bench ui` serves the store (its default address)


def runs_markdown(rows: list[dict], found: dict, results: Path | str, page_dir: Path, profile: str) -> list[str]:
    """The runs behind the cells: per experiment, each seed's result file (relative link) and MLflow run (its page
    in `bench ui`); a cell's [runs] link points here."""
    import os

    experiments = list(
        dict.fromkeys(e for r in rows if has_runs(r) for e in (r["experiment"], r["baseline_experiment"]) if e)
    )
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
            run = (
                f"[MLflow]({MLFLOW_UI}/#/experiments/{m['experiment_id']}/runs/{m['run_id']})"
                if m.get("experiment_id") and m.get("run_id")
                else f"MLflow `{m.get('run_id') or 'none'}`"
            )
            links.append(f"seed {seed}: [{res['status'].lower()}]({rel}) · {run}")
        cells = sum(eid in (r["experiment"], r["baseline_experiment"]) for r in rows)
        body.append([f'<a id="{run_anchor(eid)}"></a>`{eid}`', cells, "<br>".join(links) or "no result file"])
    return [
        "## Runs behind the cells",
        "",
        "Each cell's [runs] link lands here: its experiment's result file per seed (the source of truth, under "
        f"`{Path(results).as_posix()}/`, not committed) and its MLflow run (open the store with `bench ui`, "
        f"then follow the link to {MLFLOW_UI}).",
        "",
        "<details><summary>" + f"{len(experiments)} experiments" + "</summary>",
        "",
        tabulate(
            body,
            headers=["Experiment", "Cells", "Result file · MLflow run, per seed"],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
        "</details>",
        "",
    ]


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

        def num(k, r=r):
            return fmt_value(float(r[k])) if r[k] else "–"

        acc = num("test_accuracy") + (f" ± {num('test_accuracy_sd')}" if r["test_accuracy_sd"] else "")
        status = r["status"] + (f" (n={r['n']})" if r["n"] != r["seeds_expected"] else "")
        diff = (
            f"{float(r['diff_test_accuracy']):+.2f} ({'exceeds' if r['exceeds_tolerance'] == 'yes' else 'within'}"
            f" ±{float(r['tolerance']):g})"
            if r.get("diff_test_accuracy")
            else "–"
        )
        body.append(
            [
                f"`{r['experiment']}` [{mark}]",
                f"{r.get('reading', '')} [{r.get('basis', '')}]",
                f"`{r['beside']}`",
                status,
                acc,
                num("beside_test_accuracy") if "beside_test_accuracy" in r else "–",
                diff,
                num("training_time_s"),
                num("peak_memory_mb"),
                r["epochs"],
            ]
        )
    lines = [
        "## Companion runs (no cell of the paper)",
        "",
        "Runs that the cells above should be read beside; they are not claims of the paper. Each reads the "
        "experiment beside it another way (the reading, and what states it: the paper's text, the authors' "
        "code, or a choice); its test accuracy stands beside the primary's, with the difference and whether it "
        "exceeds the accuracy tolerance of the cells (`bench/tolerances.yaml`).",
        "",
        tabulate(
            body,
            headers=[
                "Run",
                "Reading [basis]",
                "Beside",
                "Status",
                "Test accuracy (%)",
                "Beside: test accuracy (%)",
                "Difference (tolerance)",
                "Training time (s)",
                "Peak memory (MB)",
                "Epochs trained",
            ],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
    ]
    lines += [f"[{mark}] {why}  " for why, mark in reasons.items()]
    return lines + [""]


def measurement_markdown(paper: str, cells: list[dict], results: Path | str, profile: str) -> list[str]:
    """The models measured without training, under every convention and counting backend, side by side."""
    from bench.run import deterministic as det
    from bench.verdicts.aggregate import load_measurements

    found = [m for mid, m in load_measurements(profile, results).items() if det.measurements()[mid][0] == paper]
    if not found:
        return []
    printed = {
        r["id"].split(".")[2].replace("-", ""): r for r in cells if r["metric"] == "flops" and r["seeds_expected"] == 0
    }
    spec = found[0]
    backends = list(spec["conventions"][0]["macs"])
    primary_backend = spec["primary"]["backend"]
    lines = [
        "## Models measured without training",
        "",
        f"Primary convention (it gives the cells above their value): `{spec['primary']['convention']}` with the "
        f"`{spec['primary']['backend']}` count. {' '.join(spec['why'].split())}",
        "",
        "MACs of one forward pass of one sample, counted by ptflops (FLOPs = 2 x MACs); `pytorch`: nn.Module "
        "hooks only (ptflops' classic count); `pytorch+functional`: plus functional and tensor ops (counts an "
        "nn.ReLU twice); `aten`: aten convolutions and matrix products. Parameters counted by the suite, "
        "frozen ones included. Full width in every profile.",
        "",
    ]
    body = []
    for m in found:
        cell = printed.get(m["model"])
        for conv in m["conventions"]:
            mark = " (primary)" if conv["name"] == m["primary"]["convention"] else ""
            ratio = f"{cell['claimed'] / (conv['macs'][primary_backend] / 1e6):.2f}" if cell else ""
            body.append(
                [
                    m["model"],
                    conv["name"] + mark,
                    "x".join(map(str, conv["input_shape"])),
                    conv["num_classes"],
                    f"{conv['params_total']:,}",
                ]
                + [f"{conv['macs'][b] / 1e6:,.2f}" for b in backends]
                + ([cell["printed"], ratio] if cell else [])
            )
    extra = ["Printed FLOPs", f"Printed / MMac ({primary_backend})"] if printed else []
    ratios = sorted(float(row[-1]) for row in body if printed and "(primary)" in row[1])
    if ratios:
        lines += [
            f"At the primary convention the printed FLOPs are {ratios[0]:.2f} to {ratios[-1]:.2f} times the "
            "suite's count; the table shows how far each other convention is.",
            "",
        ]
    lines += [
        tabulate(
            body,
            headers=["Model", "Convention", "Input", "Classes", "Parameters"]
            + [f"MMac ({b})" for b in backends]
            + extra,
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
    ]
    return lines


def learning_markdown(found: dict) -> list[str]:
    """Per method: are its runs above chance (bench.verdicts.learning)? A method at chance is broken or untrainable
    here."""
    from bench.verdicts import learning

    rows = learning.per_method(found)
    if not rows:
        return []
    body = []
    for r in rows:
        low = r["lowest"]
        body.append(
            [
                f"`{r['method']}`",
                r["finished"],
                f"{r['above']} / {r['finished']}",
                f"{r['median_ratio']:.1f}x" if r["finished"] else "–",
                f"{low[3]:.1f} % = {low[0]:.1f}x (`{low[2]}`)" if low else "–",
                r["unfinished"],
            ]
        )
    return [
        "## Does each method learn?",
        "",
        "Each finished run's test accuracy against chance (1 / its dataset's classes): above chance when a "
        f"one-sided binomial test on its own test samples gives p < {learning.ALPHA} (`bench/verdicts/learning.py`). "
        "A method whose runs sit at chance has stopped learning, whatever its cells say.",
        "",
        tabulate(
            body,
            headers=[
                "Method",
                "Finished runs",
                "Above chance",
                "Median accuracy / chance",
                "Lowest (run)",
                "Failed or diverged",
            ],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
    ]


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
    return (
        [
            "## Choices made where the paper is silent",
            "",
            f"From `bench/grids/{paper}.yaml` (every setting there names its source; these are the choices). The "
            "verdicts' tolerances are choices too: `bench/tolerances.yaml`, with the reasoning.",
            "",
        ]
        + items
        + [""]
    )
