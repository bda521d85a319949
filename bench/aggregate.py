"""`bench aggregate`: per-seed result files -> one row of statistics per claim cell (results/<profile>/cells.csv).

A cell's value is computed per seed from the run(s) it depends on (a time saving from the run and its
baseline run of the same seed; an average stated in the text from the cells it averages), then summarized
over seeds. Reads only the result files, never MLflow. Cells that cannot be measured yet keep their row,
with status MISSING and the reason.
"""
import csv
import json
import math
from pathlib import Path

from bench import experiments as ex
from bench import stats
from bench.registry import Claim, load_claims, members
from bench.runner import run_path, write_json_atomic

COLUMNS = ["id", "paper", "table", "row", "column", "metric", "unit", "printed", "claimed", "n", "seeds_expected",
           "mean", "sd", "ci_low", "ci_high", "diff", "status", "reason", "experiment", "baseline_experiment",
           "mlflow_runs"]


def metric_value(claim: Claim, result: dict, baseline: dict | None = None) -> float:
    """The value of `claim` measured by one run (and its baseline run, for relative cells), in the claim's unit."""
    m = result["metrics"]
    if claim.metric == "test_accuracy":
        return m["test_accuracy"]
    if claim.metric == "test_error":
        return 100.0 - m["test_accuracy"]
    if claim.metric == "train_time":
        return m["train_time_s"] / (60.0 if claim.unit == "min" else 1.0)
    if claim.metric == "memory":
        return m["peak_memory_mb"] / (1024.0 if claim.unit == "GB" else 1.0)
    if claim.metric == "time_saving_pct":
        t_base = baseline["metrics"]["train_time_s"]
        return 100.0 * (t_base - m["train_time_s"]) / t_base
    raise ValueError(f"no run measures metric {claim.metric}")


def load_results(profile: str, seeds: list[int], results: Path | str = "results") -> dict:
    """(experiment id, seed) -> result dict, for every result file present."""
    found = {}
    for eid in ex.experiments():
        for seed in seeds:
            path = run_path(profile, eid, seed, results)
            if path.exists():
                with open(path, encoding="utf-8") as f:
                    found[(eid, seed)] = json.load(f)
    return found


class CellValues:
    """Per-seed values of every cell, with the reason when a cell has none."""

    def __init__(self, claims, profile, seeds, runs):
        self.claims, self.profile, self.seeds, self.runs = claims, profile, seeds, runs
        self.cache = {}

    def per_seed(self, claim: Claim) -> tuple[dict, str, list[str], bool]:
        """({seed: value}, why values are missing, MLflow run ids used, whether a run failed)."""
        if claim.id not in self.cache:
            self.cache[claim.id] = self._compute(claim)
        return self.cache[claim.id]

    def _compute(self, claim):
        if claim.derived_from:
            parts = [self.per_seed(m) for m in members(claim, self.claims)]
            values = {s: sum(p[0][s] for p in parts) / len(parts) for s in self.seeds if all(s in p[0] for p in parts)}
            reasons = sorted({p[1] for p in parts if p[1]})
            reason = "" if values else f"averages {len(parts)} cells, some without values: " + "; ".join(reasons)
            return values, reason, sorted({r for p in parts for r in p[2]}), any(p[3] for p in parts)
        key = claim.experiment_key()
        if key is None:
            return {}, "computed from the model alone (FLOPs, parameter counts): not measured yet (issue 3)", [], False
        keys = [key] + ([claim.baseline_key()] if claim.baseline_key() else [])
        exps = [ex.Experiment(*k) for k in keys]
        for exp in exps:
            why = ex.support(exp, self.profile)
            if why:
                return {}, why, [], False
        values, run_ids, failures = {}, [], []
        for seed in self.seeds:
            found = [self.runs.get((e.id, seed)) for e in exps]
            if any(r is None for r in found):
                continue
            bad = [r for r in found if r.get("status") != "FINISHED"]
            if bad:
                failures.append(f"{bad[0]['experiment']} seed {seed}: {bad[0].get('error', bad[0].get('status'))}")
                continue
            values[seed] = metric_value(claim, found[0], found[1] if len(found) > 1 else None)
            run_ids += [r["mlflow"]["run_id"] or "" for r in found]
        if failures:
            reason = "; ".join(failures)
        elif len(values) < len(self.seeds):
            reason = f"{len(self.seeds) - len(values)} of {len(self.seeds)} seeds have no result file yet"
        else:
            reason = ""
        return values, reason, run_ids, bool(failures)


def cell_rows(profile: str, seeds: list[int], results: Path | str = "results") -> list[dict]:
    claims = load_claims()
    values = CellValues(claims, profile, seeds, load_results(profile, seeds, results))
    rows = []
    for c in claims:
        per_seed, reason, run_ids, failed = values.per_seed(c)
        s = stats.summarize([per_seed[k] for k in sorted(per_seed)])
        if s["n"] == len(seeds):
            status = "MEASURED"
        else:
            status = "FAILED" if failed else ("PARTIAL" if per_seed else "MISSING")
        key, base = c.experiment_key(), c.baseline_key()
        rows.append({"id": c.id, "paper": c.paper, "table": c.table, "row": c.row, "column": c.column,
                     "metric": c.metric, "unit": c.unit, "printed": c.printed, "claimed": c.value,
                     "n": s["n"], "seeds_expected": len(seeds), "mean": s["mean"], "sd": s["sd"],
                     "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                     "diff": s["mean"] - c.value if per_seed else math.nan, "status": status,
                     "reason": reason if status != "MEASURED" else "",
                     "experiment": ex.Experiment(*key).id if key else "",
                     "baseline_experiment": ex.Experiment(*base).id if base else "",
                     "mlflow_runs": " ".join(run_ids)})
    return rows


def _fmt(v):
    return "" if isinstance(v, float) and math.isnan(v) else (f"{v:.10g}" if isinstance(v, float) else v)


def aggregate(profile: str, results: Path | str = "results", seeds=None) -> Path:
    ex.profile_settings(profile)
    seed_list = ex.seeds(profile, seeds)
    rows = cell_rows(profile, seed_list, results)
    out = Path(results) / profile / "cells.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows({k: _fmt(v) for k, v in r.items()} for r in rows)
    tmp.replace(out)
    write_json_atomic(Path(results) / profile / "aggregate.json", {"profile": profile, "seeds": seed_list})
    return out
