"""`bench report`: results/<profile>/{cells,headlines,companions}.csv -> reports/<profile>/index.md, one <paper>.md
per paper (its tables: tables.py; the sections beside them: sections.py), figures (figures.py).

The index has one line per paper (cells with values, verdict counts, headline claims held, audit findings). A paper's
report starts with its summary (scope, what reproduced, what did not, what could not be judged and why), then its
tables as the paper prints them (same rows, same columns), every cell "printed → reproduced mean ± sd (n)" with its
verdict, then the headline claims, per-epoch figures, companion runs, model measurements and the choices made where
the paper is silent. The header names the profile, the hardware and the code version the runs used; for the smoke
and check profiles the first line says that their numbers say nothing about the papers. Output is byte-stable:
fixed ordering and number formats, PNGs without timestamps.
"""

import csv
import hashlib
import json
import math
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from tabulate import tabulate

from bench import BenchError
from bench import experiments as ex
from bench.claims.registry import papers
from bench.report.figures import claimed_vs_reproduced, epoch_figures
from bench.report.sections import (
    choices_markdown,
    companion_markdown,
    headline_markdown,
    learning_markdown,
    measurement_markdown,
    runs_markdown,
)
from bench.report.tables import how_to_read, summary_markdown, table_markdown, verdict_counts
from bench.run.results import load_results, write_json_atomic
from bench.run.targets import epochs_summary

SMOKE_WARNING = (
    "> **Smoke profile: these numbers say nothing about the papers.** They come from synthetic "
    "stand-in data, networks at 1/16 width and a few short epochs; they only show that every step of "
    "the pipeline runs."
)
CHECK_WARNING = (
    "> **Check profile: a real-data sanity check, not a reproduction.** Real data cut to fixed "
    "subsets, networks at 1/4 width, a few epochs (the header says how many): the numbers show that each "
    "method learns, not what "
    "the papers' settings give."
)


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


def run_facts(found: dict, paper: str | None = None) -> dict:
    """Counts over the valid result files `found` (load_results' dict), of one paper's experiments with `paper`."""
    runs = [r for (eid, _), r in found.items() if paper is None or eid.split("-")[0] == paper]
    count = lambda key: Counter(r["environment"].get(key, "not recorded") for r in runs)  # noqa: E731
    configs = {}  # experiment -> {code version: config digest}
    for (eid, _), r in found.items():
        if paper is None or eid.split("-")[0] == paper:
            configs.setdefault(eid, {})[r["environment"].get("code_version")] = ex.config_hash(r.get("config", {}))
    return {
        "runs": len(runs),
        "devices": count("device"),
        "code": count("code_version"),
        "torch": count("torch"),
        "precision": count("precision"),
        "last": max((r["finished"] for r in runs), default=""),
        "config_differs": {e for e, by in configs.items() if len(by) > 1 and len(set(by.values())) > 1},
    }


def code_versions_note(facts: dict) -> str:
    """Whether the runs of several code versions are comparable: their resolved configs (what a run trains, its
    provenance text aside) are compared experiment by experiment; '' for one version."""
    if len(facts["code"]) < 2:
        return ""
    differ = sorted(facts["config_differs"])
    if not differ:
        return (
            f"; the runs mix {len(facts['code'])} code versions, and no experiment's resolved config differs "
            "between them (the training code itself may)"
        )
    return (
        f"; the runs mix {len(facts['code'])} code versions, and the resolved config differs between them for "
        f"{len(differ)} experiment(s) ({', '.join(f'`{e}`' for e in differ[:3])}{', ...' if len(differ) > 3 else ''}"
        "): compare those runs with care"
    )


def restriction(profile: str, only: str) -> list[str]:
    """The header line of a DAG restricted with only=: which experiments ran, of how many."""
    if not only:
        return []
    import fnmatch

    patterns = [p.strip() for p in only.split(",") if p.strip()]
    from bench.run.targets import targets as profile_targets

    targets = profile_targets(profile)
    ran = [t for t in targets if any(fnmatch.fnmatchcase(t, p) for p in patterns)]
    return [
        f"- **Restricted run:** `only={only}`: {len(ran)} of the profile's {len(targets)} experiments; every "
        "other cell reads MISSING here because it was not run, not because it failed"
    ]


def header(profile: str, facts: dict, seeds: list[int], title: str, only: str = "", paper: str = "") -> list[str]:
    prof = ex.profiles()[profile]
    lines = [SMOKE_WARNING, ""] if profile == "smoke" else ([CHECK_WARNING, ""] if profile == "check" else [])
    listing = lambda c: ", ".join(f"{k} ({v} runs)" for k, v in c.most_common()) or "none"  # noqa: E731
    lines += [
        f"# {title}",
        "",
        f"- **Profile:** `{profile}`: {' '.join(prof['description'].split())}",
        (
            f"- **Seeds:** {', '.join(map(str, seeds))}; runs found: {facts['runs']} "
            f"(latest finished {facts['last'] or 'n/a'})"
        ),
        f"- **Hardware:** {listing(facts['devices'])}",
        *(
            [
                f"- **Epochs:** {epochs_summary(profile, paper)} (the resolved configs of the paper's "
                "experiments in this profile; `bench config <experiment> --profile " + profile + "`)"
            ]
            if paper
            else []
        ),
        f"- **Code version:** {listing(facts['code'])}; torch {listing(facts['torch'])}" + code_versions_note(facts),
        f"- **Precision:** {listing(facts['precision'])}"
        + (
            "; **bf16 autocast is a deviation from the papers**, which trained in fp32: its numbers may "
            "differ for that reason alone"
            if facts["precision"].get("bf16")
            else ""
        ),
        *restriction(profile, only),
        "- Generated by `bench report` from `results/" + profile + "/cells.csv` (`bench aggregate`); "
        "every reproduced value traces to its result file and MLflow run (listed in cells.csv).",
        "",
    ]
    return lines


def fullness(index: Path) -> tuple[float, float] | None:
    """(result files, cells with a value) of the report whose index page this is, read from its header and its
    verdict table; None where there is no report; (inf, inf) where the page cannot be read (never overwritten
    unasked)."""
    if not index.exists():
        return None
    text = index.read_text(encoding="utf-8", errors="replace")
    runs = re.search(r"runs found: (\d+)", text)
    rows = re.findall(r"^\| \[\w+\]\(\w+\.md\)\s*\| (\d+)\s*\| (\d+)\s*\|", text, re.M)
    if not runs or not rows:
        return math.inf, math.inf
    return int(runs.group(1)), sum(int(with_values) for _, with_values in rows)


def report_dir(
    profile: str, reports: Path | str, runs: int, with_values: int, only: str, seeds: list[int], replace: bool
) -> Path:
    """Where this run's report goes: reports/<profile>/, unless a report there holds more result files or more cells
    with a value (a fuller run: a user's committed reports are never replaced by a restricted, partial or empty
    run's), then reports/<profile>/partial-<digest>/ beside it, said on stderr; `replace` writes over it anyway."""
    main = Path(reports) / profile
    old = fullness(main / "index.md")
    if replace or old is None or (runs >= old[0] and with_values >= old[1]):
        return main
    digest = hashlib.sha256(json.dumps([only, seeds, runs, with_values]).encode()).hexdigest()[:8]
    beside = main / f"partial-{digest}"
    was = "an unreadable index" if math.isinf(old[0]) else f"{old[0]:,} result files, {old[1]:,} cells with a value"
    print(
        f"bench report: {main} holds a fuller report ({was}) than this run ({runs:,} result files, {with_values:,} "
        f"cells with a value): wrote {beside}/ instead; --replace (workflow: --config replace_reports=true) writes "
        "over it",
        file=sys.stderr,
    )
    return beside


class ReportRun(NamedTuple):
    """What every page of one `bench report` shares: the profile, where the results are, the workflow's
    restriction, the seeds, the results read once (`load_results`), the folder written to and the audit's link."""

    profile: str
    results: Path | str
    only: str
    seeds: list[int]
    found: dict
    out_dir: Path
    audit_link: str


def paper_markdown(run: ReportRun, paper: str, meta: dict, rows: list[dict], mine: list[dict], audit_count: int):
    """A paper's page: its summary, tables, headline claims, figures and sections; (the lines, the figures
    written)."""
    written = []
    lines = header(run.profile, run_facts(run.found, paper), run.seeds, meta["citation"], run.only, paper)
    lines += summary_markdown(paper, meta, rows, mine, audit_count, run.audit_link)
    fig = run.out_dir / "figures" / f"{paper}_claimed_vs_reproduced.png"
    if claimed_vs_reproduced(rows, fig, f"{paper} ({run.profile} profile): printed vs reproduced, by verdict"):
        lines += [f"![claimed vs reproduced, with the tolerance bands](figures/{fig.name})", ""]
        written.append(fig)
    lines += how_to_read()
    for table, tmeta in meta["tables"].items():
        trows = [r for r in rows if r["table"] == table]
        name = "Numbers stated in the text" if table == "text" else f"Table {table}"
        lines += [f"## {name}: {tmeta['caption']}", ""] + table_markdown(trows)
    lines += headline_markdown(paper, mine)
    figures = epoch_figures(paper, run.results, run.profile, run.seeds, run.out_dir)
    if figures:
        lines += ["## Per epoch", "", ex.grid(paper)["epoch_figures"]["caption"], ""]
        lines += [f"![{f.stem}](figures/{f.name})" for f in figures] + [""]
        written += figures
    lines += runs_markdown(rows, run.found, run.results, run.out_dir, run.profile)
    lines += companion_markdown(paper, run.results, run.profile)
    lines += measurement_markdown(paper, rows, run.results, run.profile)
    lines += choices_markdown(paper)
    return lines, written


def index_row(paper: str, rows: list[dict], mine: list[dict], audit_count: int) -> list:
    """The paper's line of the index: cells, cells with values, verdict counts, headline claims held, audit
    findings."""
    c = verdict_counts(rows)
    missing = sum(h["verdict"] in ("MISSING", "DIVERGED") for h in mine)  # untested, not 'not held'
    held = (
        "N/C"
        if mine and all(h["verdict"] == "NOT COMPARABLE" for h in mine)
        else f"{sum(h['verdict'] == 'HOLDS' for h in mine)} / {len(mine)}"
        + (f", {missing} without runs" if missing else "")
    )
    return [
        f"[{paper}]({paper}.md)",
        len(rows),
        sum(1 for r in rows if r["n"]),
        c["REPRODUCED"],
        c["BETTER"],
        c["NOT REPRODUCED"],
        c["INCONCLUSIVE"],
        c["NOT COMPARABLE"],
        c["MISSING"] + c["FAILED"] + c["DIVERGED"],
        f"{held} (as printed: {sum(h['as_printed'] == 'yes' for h in mine)} / {len(mine)})",
        audit_count,
    ]


def verdicts_markdown(summary: list[list], audit_link: str) -> list[str]:
    """The index's table of verdicts per paper, the papers' citations and the link to the audit."""
    return [
        "## Verdicts per paper",
        "",
        tabulate(
            summary,
            headers=[
                "Paper",
                "Cells",
                "With values",
                "Reproduced",
                "Better",
                "Not reproduced",
                "Inconclusive",
                "Not comparable",
                "Missing / failed / diverged",
                "Headline claims held",
                "Audit findings",
            ],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
        "Papers: " + "; ".join(f"**{p}**: {m['citation']}" for p, m in papers().items()) + ".",
        "",
        f"The audit of the papers' own printed numbers (no training): [audit.md]({audit_link}).",
        "",
    ]


def remove_unlinked_figures(out_dir: Path, written: list[Path]):
    """Remove an earlier run's figures that no page links any more."""
    for old in sorted((out_dir / "figures").glob("*.png")):
        if old not in written:
            old.unlink()


def write_reports(
    profile: str,
    results: Path | str = "results",
    reports: Path | str = "reports",
    only: str = "",
    replace: bool = False,
) -> list[Path]:
    """reports/<profile>/index.md and one page per paper (with figures); `only`: the workflow's restriction, said
    in every header. A fuller report already there is kept and this one written beside it (`report_dir`).
    Figures of an earlier run that no page links any more are removed."""
    from bench.claims.audit import findings

    ex.profile_settings(profile)
    if not Path(results).is_dir():  # a typo'd --results: say so, not "run bench aggregate first"
        raise BenchError(f"{results}: no such folder (--results)")
    cells = read_cells(profile, results)
    heads = read_headlines(profile, results)
    seeds = json.loads((Path(results) / profile / "aggregate.json").read_text())["seeds"]
    found = load_results(profile, seeds, results)  # read and checked once, counted per paper below
    facts = run_facts(found)
    audit = findings()
    out_dir = report_dir(profile, reports, facts["runs"], sum(1 for r in cells if r["n"]), only, seeds, replace)
    out_dir.mkdir(parents=True, exist_ok=True)
    audit_link = os.path.relpath(Path(reports) / "audit.md", out_dir).replace(os.sep, "/")
    run = ReportRun(profile, results, only, seeds, found, out_dir, audit_link)
    written = []
    index = header(profile, facts, seeds, f"layerwise-bench: claimed vs reproduced ({profile} profile)", only)
    summary = []
    for paper, meta in papers().items():
        rows = [r for r in cells if r["paper"] == paper]
        mine = [h for h in heads if h["paper"] == paper]
        lines, figures = paper_markdown(run, paper, meta, rows, mine, len(audit.get(paper, [])))
        written += figures
        path = out_dir / f"{paper}.md"
        path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
        written.append(path)
        summary.append(index_row(paper, rows, mine, len(audit.get(paper, []))))
    index += verdicts_markdown(summary, audit_link)
    index += learning_markdown(found) + how_to_read()
    path = out_dir / "index.md"
    path.write_text("\n".join(index).rstrip() + "\n", encoding="utf-8")
    written = [path] + written
    remove_unlinked_figures(out_dir, written)
    # The workflow's final target: it lives with the results, so that a fresh clone (whose reports/ are committed
    # but whose results/ are not) regenerates the reports, and a second run with nothing changed does nothing.
    manifest = Path(results) / profile / "reports.json"
    write_json_atomic(manifest, {"profile": profile, "reports": [p.as_posix() for p in written]})
    return written + [manifest]
