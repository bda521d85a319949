"""The claims registry: every numeric cell of the papers' results tables, one row per printed cell.

The data lives in bench/claims/<paper>.csv (one file per paper) and bench/claims/papers.yaml (the papers,
their tables and the tables' shapes). `load_claims()` reads and validates every row; a malformed row
stops everything with one message naming the file, the line and the field.

Each claim maps to at most one training experiment (paper, dataset, model, method, variant); cells that
need no training (FLOPs, parameter counts) and cells derived from other cells (the averages a paper
states in its text) map to none.
"""

import csv
import fnmatch
import io
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from functools import cache
from pathlib import Path

from bench import BenchError
from bench.claims.datasets import DATASETS

# The registry shipped with the package; $BENCH_CLAIMS_DIR points the suite at an edited copy.
CLAIMS_DIR = Path(os.environ.get("BENCH_CLAIMS_DIR") or Path(__file__).parent)

# metric -> the units a claim of that metric may be printed in
METRIC_UNITS = {
    "test_accuracy": {"%"},
    "test_error": {"%"},
    "train_time": {"min", "s"},
    "memory": {"MB", "GB"},
    "time_saving_pct": {"%"},
    "flops": {"MMac"},
    "flops_reduction_pct": {"%"},
    "params": {"count"},
}
# seconds in one of train_time's units
SECONDS_PER_TIME_UNIT = {"s": 1.0, "min": 60.0}
# metrics a training run measures (the others are computed from the model alone)
RUN_METRICS = {"test_accuracy", "test_error", "train_time", "memory", "time_saving_pct"}
# metrics comparing a run with its baseline run (baseline_method names the baseline's method)
RELATIVE_METRICS = {"time_saving_pct", "flops_reduction_pct"}
HIGHER_IS_BETTER = {
    "test_accuracy": True,
    "test_error": False,
    "train_time": False,
    "memory": False,
    "time_saving_pct": True,
    "flops": False,
    "flops_reduction_pct": True,
    "params": None,
}

# Every training method the papers compare (implemented or not; see bench.methods for which are).
METHODS = {
    "backprop": (
        "plain end-to-end backpropagation (Ma 'Global', Karimi 'End-to-End', Cruciata 'SGD', Bhyravabhottla 'Standard')"
    ),
    "predsim": "PredSim local losses, all blocks trained simultaneously (Ma 'Layer-wise'; Nokland & Eidnes 2019)",
    "si_forward": "forward layer-wise learning by separation-index maximization (Karimi 'Proposed method')",
    "fb_si": "forward-backward SI: first conv by SI, then the rest end-to-end (Karimi 'Forward-backward')",
    "greedy_layerwise": "greedy layer-wise with temporary linear heads (Karimi '(Modified) Greedy Layer-Wise')",
    "belilovsky_greedy": "greedy k-hidden-layer auxiliary training of SimCNN (Karimi 'Belilovsky et al.')",
    "layer_to_layer": "layer-to-layer progressive narrowing of the trainable window (Bhyravabhottla 'Layer-to-Layer')",
    "learn_drop": "Learn & Drop: gradient-score layer dropping (Cruciata 'Dropping')",
    "freezing": "the same selection as Learn & Drop, layers frozen instead of dropped (Cruciata 'Freezing')",
}

FIELDS = [
    "id",
    "paper",
    "table",
    "row",
    "column",
    "dataset",
    "model",
    "method",
    "variant",
    "part",
    "metric",
    "printed",
    "value",
    "unit",
    "baseline_method",
    "derived_from",
    "note",
]


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    table: str
    row: str
    column: str
    dataset: str
    model: str
    method: str
    variant: str
    part: str  # for parameter/FLOPs cells: the named block counted ("" = the whole model)
    metric: str
    printed: str
    value: float
    unit: str
    baseline_method: str
    derived_from: str
    note: str
    line: int = 0  # line in the CSV file, for error messages

    @property
    def needs_run(self) -> bool:
        return self.metric in RUN_METRICS and not self.derived_from

    def experiment_key(self, method: str | None = None) -> tuple | None:
        """(paper, dataset, model, method, variant) of the run this cell is measured on, or None."""
        if not self.needs_run:
            return None
        return (self.paper, self.dataset, self.model, method or self.method, self.variant)

    def baseline_key(self) -> tuple | None:
        """The run a relative cell (a time saving) compares with: the same cell under baseline_method."""
        if self.metric not in RELATIVE_METRICS or not self.needs_run:
            return None
        return self.experiment_key(self.baseline_method)

    def row_dict(self) -> dict:
        d = asdict(self)
        d.pop("line")
        return d


def _fail(path: Path, line: int, msg: str):
    raise BenchError(f"malformed registry row: {path.name} line {line}: {msg}")


def _parse_row(path: Path, line: int, raw: dict, paper: str, tables: dict) -> Claim:
    if None in raw or any(v is None for v in raw.values()):
        _fail(path, line, f"expected {len(FIELDS)} comma-separated fields")
    row = {k: (v or "").strip() for k, v in raw.items()}
    for key in ("id", "paper", "table", "row", "column", "metric", "printed", "value", "unit"):
        if not row[key]:
            _fail(path, line, f"field '{key}' is empty")
    if row["paper"] != paper:
        _fail(path, line, f"paper '{row['paper']}' in the file of paper '{paper}'")
    if row["table"] not in tables:
        _fail(path, line, f"table '{row['table']}' is not a table of {paper} in papers.yaml ({', '.join(tables)})")
    metric = row["metric"]
    if metric not in METRIC_UNITS:
        _fail(path, line, f"metric '{metric}' is not one of {', '.join(sorted(METRIC_UNITS))}")
    if row["unit"] not in METRIC_UNITS[metric]:
        _fail(
            path, line, f"unit '{row['unit']}' does not fit metric {metric} ({', '.join(sorted(METRIC_UNITS[metric]))})"
        )
    try:
        value = float(row["value"])
    except ValueError:
        _fail(path, line, f"value '{row['value']}' is not a number")
    if not math.isfinite(value):
        _fail(path, line, f"value '{row['value']}' is not finite")
    reads = printed_value(row["printed"])
    if reads is None or not math.isclose(value, reads, rel_tol=1e-9, abs_tol=1e-12):
        _fail(
            path,
            line,
            f"value {row['value']} is not what printed '{row['printed']}' reads"
            + (f" ({reads:g})" if reads is not None else " (no number)"),
        )
    if row["method"] and row["method"] not in METHODS:
        _fail(path, line, f"method '{row['method']}' is not one of {', '.join(METHODS)}")
    if row["baseline_method"] and row["baseline_method"] not in METHODS:
        _fail(path, line, f"baseline_method '{row['baseline_method']}' is not a known method")
    if row["dataset"] and row["dataset"] not in DATASETS:
        _fail(path, line, f"dataset '{row['dataset']}' is not one of {', '.join(DATASETS)}")
    if metric in RELATIVE_METRICS and not row["baseline_method"]:
        _fail(path, line, f"metric {metric} needs a baseline_method")
    if metric in RUN_METRICS and not row["derived_from"]:
        for key in ("dataset", "model", "method"):
            if not row[key]:
                _fail(path, line, f"a {metric} cell needs a {key} (the run it is measured on)")
    return Claim(
        **{f.name: row[f.name] for f in fields(Claim) if f.name not in ("value", "line")}, value=value, line=line
    )


@cache
def papers() -> dict:
    """paper id -> {source, citation, tables: {table: {caption, shape}}} from papers.yaml."""
    from bench.schema import load

    return load(Path(__file__).parent / "papers.yaml", "papers")


def load_claims(claims_dir: Path | None = None) -> list[Claim]:
    """Every claim of every paper, validated; raises BenchError on the first malformed row."""
    return list(_load_claims(Path(claims_dir or CLAIMS_DIR)))


@cache
def _load_claims(claims_dir: Path) -> tuple[Claim, ...]:
    claims, seen = [], {}
    for paper, meta in papers().items():
        path = claims_dir / f"{paper}.csv"
        if not path.exists():
            raise BenchError(f"registry file missing: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            line = path.read_bytes()[: err.start].count(b"\n") + 1
            raise BenchError(
                f"malformed registry file: {path.name} line {line}: not UTF-8 text ({err.reason} at byte {err.start})"
            ) from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames != FIELDS:
            raise BenchError(f"malformed registry header in {path.name}: expected {','.join(FIELDS)}")
        for raw in reader:
            claim = _parse_row(path, reader.line_num, raw, paper, meta["tables"])
            if claim.id in seen:
                _fail(path, claim.line, f"id '{claim.id}' repeats line {seen[claim.id]}")
            seen[claim.id] = claim.line
            claims.append(claim)
    by_id = {c.id for c in claims}
    for c in claims:
        if c.derived_from and not any(fnmatch.fnmatchcase(i, c.derived_from) for i in by_id):
            raise BenchError(
                f"malformed registry row: {c.paper}.csv line {c.line}: derived_from '{c.derived_from}' matches no claim"
            )
    return tuple(claims)


def printed_value(printed: str) -> float | None:
    """The number a printed cell reads: '1,987.80' -> 1987.8, '66.30%' -> 66.3, '5.5 GB' -> 5.5, a time printed as
    minutes:seconds '34:20' -> 34.333 (minutes); None when it holds no number."""
    text = printed.strip().split()[0].replace(",", "").rstrip("%") if printed.strip() else ""
    try:
        if ":" in text:
            minutes, seconds = text.split(":")
            return int(minutes) + int(seconds) / 60.0
        return float(text)
    except ValueError:
        return None


def printed_decimals(printed: str) -> int:
    """Decimals of a printed number ('1,987.80' -> 2, '98.6 %' -> 1, '896' -> 0)."""
    number = printed.replace(",", "").split()[0].rstrip("%")
    return len(number.split(".")[1]) if "." in number else 0


def half_ulp(printed: str) -> float:
    """Half a unit in the last printed digit: the rounding error a printed number may carry."""
    number = re.sub(r"[^0-9.]", "", printed.split()[0]) if printed.strip() else ""
    if ":" in printed:
        return 0.5 / 60.0  # minutes:seconds, read in minutes
    decimals = len(number.split(".")[1]) if "." in number else 0
    return 0.5 * 10.0**-decimals


def members(claim: Claim, claims: list[Claim]) -> list[Claim]:
    """The cells a derived claim (e.g. an average stated in the text) is computed from."""
    return [c for c in claims if c.id != claim.id and fnmatch.fnmatchcase(c.id, claim.derived_from)]


def check_paper(paper: str | None):
    """--paper names one of the registry's papers (a filter that matches nothing is an error, not an empty list)."""
    known = sorted({c.paper for c in load_claims()})
    if paper is not None and paper not in known:
        raise BenchError(f"--paper {paper}: unknown paper (one of {', '.join(known)})")
