"""The paper's tables in a report: every cell "printed → reproduced mean ± sd (n)" with its verdict, in the paper's
own rows and columns; the legend that says how to read a verdict; and the summary at the top of a paper's page.
"""

import math
from collections import Counter

from tabulate import tabulate

from bench.claims.registry import printed_decimals
from bench.verdicts import cells as vd


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


SHORT = {
    "REPRODUCED": "**REP**",
    "BETTER": "**BETTER**",
    "NOT REPRODUCED": "**NOT REP**",
    "INCONCLUSIVE": "INCONCL.",
    "NOT COMPARABLE": "N/C",
}
VERDICT_ORDER = [
    "REPRODUCED",
    "BETTER",
    "NOT REPRODUCED",
    "INCONCLUSIVE",
    "NOT COMPARABLE",
    "MISSING",
    "FAILED",
    "DIVERGED",
]


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
        "point.",
        "",
    ]


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


def table_markdown(rows: list[dict]) -> list[str]:
    """One paper table, pivoted back to the paper's own rows and columns."""
    row_labels = list(dict.fromkeys(r["row"] for r in rows))
    col_labels = list(dict.fromkeys(r["column"] for r in rows))
    cells = {(r["row"], r["column"]): r for r in rows}
    notes: dict[str, int] = {}
    body = [
        [label] + [fmt_cell(cells[(label, col)], notes) if (label, col) in cells else "" for col in col_labels]
        for label in row_labels
    ]
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


def summary_markdown(
    paper: str, meta: dict, rows: list[dict], heads: list[dict], audit_count: int, audit_link: str = "../audit.md"
) -> list[str]:
    """The paper's verdicts in a few lines: scope, what reproduced, what did not, what could not be compared."""
    model = [r for r in rows if r["seeds_expected"] == 0]
    counts = verdict_counts(rows)
    lines = [
        "## Summary",
        "",
        f"- **Scope:** {len(rows)} cells in {len(meta['tables'])} tables (the text's numbers count as one): "
        f"{len(model)} computed from the model alone, {len(rows) - len(model)} from training runs; "
        f"{sum(1 for r in rows if r['n'])} have a reproduced value.",
        f"- **The paper's numbers:** {meta.get('seeds', 'not stated')}, so each printed value is treated as a "
        f"point. Hardware: {meta.get('hardware', 'not stated')}.",
        "- **Verdicts:** " + ", ".join(f"{v} {n}" for v, n in counts.items() if n) + f" (decision rule: {vd.rule()}).",
    ]
    identical = [r for r in rows if r.get("flag") == "identical seeds"]
    if identical:
        lines.append(
            f"- **Identical seeds ({len(identical)} cells), not judged:** "
            + "; ".join(_label(r) for r in identical[:12])
            + ("; ..." if len(identical) > 12 else "")
            + ". Every seed gave the same value: the seed most likely never reached these runs."
        )
    for verdict, title in (
        ("REPRODUCED", "Reproduced"),
        ("BETTER", "Better than printed"),
        ("NOT REPRODUCED", "Not reproduced"),
    ):
        sel = [r for r in rows if r["verdict"] == verdict]
        if sel:
            lines.append(f"- **{title} ({len(sel)}):** {_listing(sel)}.")
    unjudged = Counter(
        (r["verdict"], r["reason"])
        for r in rows
        if r["verdict"] in ("INCONCLUSIVE", "NOT COMPARABLE", "MISSING", "FAILED", "DIVERGED")
    )
    if unjudged:
        lines.append(
            "- **Not judged:** "
            + "; ".join(
                f"{n} {v} ({why or 'no reason given'})"
                for (v, why), n in sorted(unjudged.items(), key=lambda kv: (-kv[1], kv[0]))
            )
            + "."
        )
    if heads:
        c = Counter("holds on some pairs" if h["verdict"].startswith("holds on ") else h["verdict"] for h in heads)
        lines.append(
            f"- **Headline claims ({len(heads)}):** on the runs "
            + ", ".join(
                f"{v} {c[v]}"
                for v in (
                    "HOLDS",
                    "holds on some pairs",
                    "REVERSED",
                    "NOT SIGNIFICANT",
                    "NOT COMPARABLE",
                    "MISSING",
                    "DIVERGED",
                )
                if c[v]
            )
            + (
                " (the tests on these runs: "
                + ", ".join(f"{v} {n}" for v, n in sorted(Counter(h["test"] for h in heads).items()))
                + ")"
                if c["NOT COMPARABLE"]
                else ""
            )
            + f"; as printed, {sum(h['as_printed'] == 'yes' for h in heads)} of {len(heads)} hold."
        )
    lines.append(f"- **Audit of the printed numbers:** {audit_count} findings ([audit]({audit_link})).")
    return lines + [""]
