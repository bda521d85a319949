"""`bench aggregate`: result files -> one row of statistics per claim cell (results/<profile>/cells.csv).

A trained cell's value is computed per seed from the run(s) it depends on (a time saving from the run and its
baseline run of the same seed; an average stated in the text from the cells it averages), then summarized
over seeds. A cell computed from the model alone (parameters, FLOPs) has one exact value from its measurement
file and a verdict: REPRODUCED when it rounds to the printed value. Reads only result files, never MLflow.
Cells that cannot be measured yet keep their row, with status MISSING and the reason.
"""

import csv
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench import BenchError
from bench import experiments as ex
from bench.claims.headlines import as_printed, load_headlines
from bench.claims.registry import SECONDS_PER_TIME_UNIT, Claim, load_claims, members
from bench.run import deterministic as det
from bench.run import results as result_files
from bench.run.results import load_results, write_json_atomic
from bench.run.targets import support
from bench.verdicts import cells as vd
from bench.verdicts import headlines as hl
from bench.verdicts import readings as rd
from bench.verdicts import stats

COLUMNS = [
    "id",
    "paper",
    "table",
    "row",
    "column",
    "metric",
    "unit",
    "printed",
    "claimed",
    "n",
    "seeds_expected",
    "mean",
    "sd",
    "ci_low",
    "ci_high",
    "ci_method",
    "diff",
    "band_low",
    "band_high",
    "p_ttest",
    "p_equivalence",
    "p_cell",
    "p_adjusted",
    "correction",
    "status",
    "verdict",
    "seeds_needed",
    "flag",
    "reason",
    "devices",
    "experiment",
    "baseline_experiment",
    "sources",
]
HEADLINE_COLUMNS = [
    "id",
    "paper",
    "where",
    "relation",
    "cells",
    "as_printed",
    "printed_numbers",
    "n",
    "pairs",
    "diff",
    "p_holds",
    "p_reversed",
    "p_two_sided",
    "p_adjusted",
    "correction",
    "test",
    "verdict",
    "reason",
    "readings",
    "holds_under",
    "readings_note",
]


def metric_value(claim: Claim, result: dict, baseline: dict | None = None) -> float:
    """The value of `claim` measured by one run (and its baseline run, for relative cells), in the claim's unit."""
    m = result["metrics"]
    if claim.metric == "test_accuracy":
        return m["test_accuracy"]
    if claim.metric == "test_error":
        return 100.0 - m["test_accuracy"]
    if claim.metric == "train_time":
        return training_seconds(result) / SECONDS_PER_TIME_UNIT[claim.unit]
    if claim.metric == "memory":  # the grid's `memory_metric` says which measurement the paper's memory is
        key = result.get("config", {}).get("memory_metric", "peak_memory_mb")
        return m[key] / (1024.0 if claim.unit == "GB" else 1.0)
    if claim.metric == "time_saving_pct":
        t_base = baseline["metrics"]["train_time_s"]
        return 100.0 * (t_base - m["train_time_s"]) / t_base
    raise ValueError(f"no run measures metric {claim.metric}")


def training_seconds(result: dict) -> float:
    """The run's training time as its paper times it: `train_time_s` (training epochs only), or, where the grid
    says `timing: fit_with_validation` (Keras' fit with validation data, Bhyravabhottla & Lee), the epochs with
    their per-epoch test evaluation, and for layer-to-layer the wall time around the whole staged loop."""
    m = result["metrics"]
    if result.get("config", {}).get("timing") != "fit_with_validation":
        return m["train_time_s"]
    if "staged_wall_time_s" in m:
        return m["staged_wall_time_s"]
    return sum(e.get("epoch_time_s", 0.0) + e.get("eval_time_s", 0.0) for e in result["epochs"])


COMPANION_COLUMNS = [
    "experiment",
    "beside",
    "paper",
    "dataset",
    "model",
    "method",
    "variant",
    "reading",
    "basis",
    "n",
    "seeds_expected",
    "status",
    "test_accuracy",
    "test_accuracy_sd",
    "beside_test_accuracy",
    "diff_test_accuracy",
    "tolerance",
    "exceeds_tolerance",
    "training_time_s",
    "peak_memory_mb",
    "epochs",
    "why",
    "mlflow_runs",
]


def companion_rows(
    profile: str, seeds: list[int], results: Path | str = "results", invalid: dict | None = None
) -> list[dict]:
    """One row per companion run (bench.experiments.companions): mean test accuracy, training time and memory."""
    invalid = {} if invalid is None else invalid
    runs = load_results(profile, seeds, results, invalid)
    rows = []
    readings = ex.companion_readings()
    tolerance = vd.tolerances()["metrics"]["test_accuracy"]["points"]  # the accuracy band's absolute half-width

    def accuracy(eid):
        done = [runs[(eid, s)] for s in seeds if runs.get((eid, s), {}).get("status") == "FINISHED"]
        return stats.summarize([r["metrics"]["test_accuracy"] for r in done])

    for eid, (exp, beside, why) in ex.companions().items():
        if support(exp, profile):
            continue
        found = [runs[(eid, s)] for s in seeds if (eid, s) in runs]
        done = [r for r in found if r.get("status") == "FINISHED"]
        acc, primary = accuracy(eid), accuracy(beside)
        diff = acc["mean"] - primary["mean"] if acc["n"] and primary["n"] else math.nan
        mean = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
        failed = {r.get("status") for r in found} - {"FINISHED"}
        status = (
            "INVALID"
            if any((eid, s) in invalid for s in seeds)
            else "MEASURED"
            if len(done) == len(seeds)
            else (
                ("DIVERGED" if failed == {"DIVERGED"} else "FAILED") if failed else ("PARTIAL" if done else "MISSING")
            )
        )
        rows.append(
            {
                "experiment": eid,
                "beside": beside,
                "paper": exp.paper,
                "dataset": exp.dataset,
                "model": exp.model,
                "method": exp.method,
                "variant": exp.variant,
                "reading": readings[eid][1],
                "basis": readings[eid][2],
                "n": acc["n"],
                "seeds_expected": len(seeds),
                "status": status,
                "test_accuracy": acc["mean"],
                "test_accuracy_sd": acc["sd"],
                "beside_test_accuracy": primary["mean"] if primary["n"] else math.nan,
                "diff_test_accuracy": diff,
                "tolerance": tolerance,
                "exceeds_tolerance": "" if math.isnan(diff) else "yes" if abs(diff) > tolerance else "no",
                "training_time_s": mean([training_seconds(r) for r in done]),
                "peak_memory_mb": mean([r["metrics"]["peak_memory_mb"] for r in done]),
                "epochs": (len(done[0].get("epochs", [])) or done[0].get("config", {}).get("epochs", ""))
                if done
                else "",
                "why": why,
                "mlflow_runs": " ".join(r["mlflow"]["run_id"] or "" for r in done),
            }
        )
    return rows


@dataclass
class Values:
    """What the suite has for one cell: per-seed values (key None for a cell computed from the model alone,
    which has one exact value), why some or all are missing, the MLflow runs or measurement files used, and
    whether a run failed."""

    per_seed: dict = field(default_factory=dict)
    reason: str = ""
    sources: list = field(default_factory=list)
    failed: bool = False
    diverged: bool = False  # every failed run stopped because its loss became NaN/inf (a result, not a crash)
    devices: set = field(default_factory=set)  # the hardware the runs ran on
    invalid: bool = False  # a result file it needs failed bench.run.results' checks (nothing used from it)
    same_runs: bool | None = None  # every seed's runs recorded the same losses (None: nothing to tell; run_losses)

    @property
    def exact(self) -> bool:
        return None in self.per_seed


def load_measurements(profile: str, results: Path | str = "results", invalid: dict | None = None) -> dict:
    """measurement id -> result dict, for every valid model measurement file present (bench.run.results); the invalid
    ones go to `invalid` as (measurement id, None) -> "path: reason" when it is given, and are never used."""
    found, claims, parts = {}, load_claims(), defaultdict(set)
    for c in claims:  # the parts each measurement's cells ask for
        if c.part and c.metric == "params":
            parts[det.measurement_id(c.paper, c.model)].add(c.part)
    for mid, (paper, model) in det.measurements(claims).items():
        path = det.result_path(profile, mid, results)
        if path.exists():
            try:
                found[mid] = result_files.load_measurement(path, mid, paper, model, det.spec(paper), parts[mid])
            except result_files.Invalid as err:
                if invalid is not None:
                    invalid[(mid, None)] = f"{path}: {err}"
    return found


def run_losses(run: dict) -> tuple:
    """What tells two runs apart beyond the cell's value: the final training and test losses and every epoch's
    training loss (empty when the run records none). Times differ between identical runs; losses do not."""
    final = tuple(run.get("metrics", {}).get(k) for k in ("train_loss", "test_loss"))
    epochs = tuple(e.get("train_loss") for e in run.get("epochs", []) if isinstance(e, dict))
    return tuple(x for x in final + epochs if x is not None)


def same_runs(losses: list[tuple]) -> bool | None:
    """Whether the runs of every seed recorded the same losses (the seed never reached them): None with fewer than
    two seeds or when a run records no loss, else True or False. A cell whose seeds give one value is INCONCLUSIVE
    only when True; otherwise it is a collapsed result and is judged (bench/verdicts/cells.py)."""
    if len(losses) < 2 or any(not part for seed in losses for part in seed):
        return None
    return len(set(losses)) == 1


class CellValues:
    """The values of every cell, computed once each (derived cells reuse their members')."""

    def __init__(self, claims, profile, seeds, runs, models, invalid: dict | None = None, read=None):
        self.claims, self.profile, self.seeds, self.runs, self.models = claims, profile, seeds, runs, models
        self.invalid = invalid or {}  # (experiment id, seed) -> "path: reason" (bench.run.results)
        self.read = read or (lambda exp: exp)  # the run that reads an experiment (bench.verdicts.readings)
        self.cache = {}

    def under(self, read) -> "CellValues":
        """The same runs with every experiment read by `read` (a reading's companions in place of the cells')."""
        return CellValues(self.claims, self.profile, self.seeds, self.runs, self.models, self.invalid, read)

    def _invalid_file(self, exps, seed) -> str:
        """The first invalid result file among these experiments' for this seed ('' when none is)."""
        return next((self.invalid[(e.id, seed)] for e in exps if (e.id, seed) in self.invalid), "")

    def of(self, claim: Claim) -> Values:
        if claim.id not in self.cache:
            self.cache[claim.id] = self._compute(claim)
        return self.cache[claim.id]

    def _compute(self, claim) -> Values:
        if claim.derived_from:
            return self._derived(claim)
        if claim.metric in det.MODEL_METRICS or claim.metric == "flops_reduction_pct":
            return self._from_model(claim)
        return self._from_runs(claim)

    def _derived(self, claim) -> Values:
        parts = [self.of(m) for m in members(claim, self.claims)]
        keys = [None] if all(p.exact for p in parts) else self.seeds
        values = {
            k: sum(p.per_seed[k] for p in parts) / len(parts) for k in keys if all(k in p.per_seed for p in parts)
        }
        reasons = sorted({p.reason for p in parts if p.reason})
        reason = "" if values else f"averages {len(parts)} cells, some without values: " + "; ".join(reasons)
        same = [p.same_runs for p in parts]
        return Values(
            values,
            reason,
            sorted({r for p in parts for r in p.sources}),
            any(p.failed for p in parts),
            devices={d for p in parts for d in p.devices},
            invalid=any(p.invalid for p in parts),
            same_runs=True if all(same) else False if False in same else None,
        )

    def _from_model(self, claim) -> Values:
        if claim.method not in ("", "backprop"):
            return self._flops_from_runs(claim)
        why = det.missing_reason(claim.paper, claim.model)
        if why:
            return Values(reason=why)
        mid = det.measurement_id(claim.paper, claim.model)
        result, missing = self._measurement(mid)
        if missing:
            return missing
        return Values({None: det.claim_value(claim, result)}, "", [f"models/{mid}.json"])

    def _measurement(self, mid: str) -> tuple[dict | None, Values | None]:
        """A model's valid measurement, or the Values that say why there is none (invalid or not yet run)."""
        if (mid, None) in self.invalid:
            return None, Values(
                reason=f"invalid measurement file {self.invalid[(mid, None)]}", failed=True, invalid=True
            )
        if mid not in self.models:
            return None, Values(reason=f"no measurement file for {mid} yet (run the workflow)")
        return self.models[mid], None

    def _flops_from_runs(self, claim) -> Values:
        """A FLOPs cell of a method that changes the network while it trains (Learn & Drop): the reduction of the
        forward MACs per sample, averaged over the run's epochs, against its SGD run of the same seed on the
        dataset the grid names (`flops_from_runs`); an absolute cell is the SGD count under the primary convention
        times that ratio, so that it reads beside the SGD column."""
        spec = ex.grid(claim.paper).get("flops_from_runs")
        if not spec:
            return Values(
                reason=f"the {claim.paper} grid names no runs (flops_from_runs) for the FLOPs of {claim.method}"
            )
        exp = self.read(ex.Experiment(claim.paper, spec["dataset"], claim.model, claim.method))
        base = self.read(ex.Experiment(claim.paper, spec["dataset"], claim.model, "backprop"))
        for e in (exp, base):
            why = support(e, self.profile)
            if why:
                return Values(reason=why)
        primary = None
        if claim.metric == "flops":
            sgd, missing = self._measurement(det.measurement_id(claim.paper, claim.model))
            if missing:
                return missing
            primary = det.claim_value(claim, sgd)
        values, run_ids, failures, invalid = {}, [], [], False
        for seed in self.seeds:
            bad_file = self._invalid_file((exp, base), seed)
            if bad_file:
                failures.append(f"invalid result file {bad_file}")
                invalid = True
                continue
            run, sgd_run = self.runs.get((exp.id, seed)), self.runs.get((base.id, seed))
            if run is None or sgd_run is None:
                continue
            if run.get("status") != "FINISHED" or sgd_run.get("status") != "FINISHED":
                failures.append(f"{exp.id} or {base.id} seed {seed} did not finish")
                continue
            per_epoch = [e["macs_epoch"] for e in run.get("epochs", []) if "macs_epoch" in e]
            if not per_epoch:
                failures.append(f"{exp.id} seed {seed} records no per-epoch MACs (macs_epoch)")
                continue
            ratio = sum(per_epoch) / len(per_epoch) / sgd_run["metrics"]["macs_forward"]
            values[seed] = 100.0 * (1.0 - ratio) if claim.metric == "flops_reduction_pct" else primary * ratio
            run_ids += [run["mlflow"]["run_id"] or "", sgd_run["mlflow"]["run_id"] or ""]
        reason = "; ".join(failures) or (
            f"{len(self.seeds) - len(values)} of {len(self.seeds)} seeds have no {exp.id} and {base.id} result yet"
            if len(values) < len(self.seeds)
            else ""
        )
        return Values(values, reason, run_ids, bool(failures), invalid=invalid)

    def _from_runs(self, claim) -> Values:
        keys = [claim.experiment_key()] + ([claim.baseline_key()] if claim.baseline_key() else [])
        exps = [self.read(ex.Experiment(*k)) for k in keys]
        for exp in exps:
            why = support(exp, self.profile)
            if why:
                return Values(reason=why)
        values, run_ids, failures, statuses, devices, losses = {}, [], [], set(), set(), []
        for seed in self.seeds:
            bad_file = self._invalid_file(exps, seed)
            if bad_file:
                failures.append(f"invalid result file {bad_file}")
                statuses.add("INVALID")
                continue
            found = [self.runs.get((e.id, seed)) for e in exps]
            if any(r is None for r in found):
                continue
            bad = [r for r in found if r.get("status") != "FINISHED"]
            if bad:
                failures.append(f"{bad[0]['experiment']} seed {seed}: {bad[0].get('error', bad[0].get('status'))}")
                statuses.add(bad[0].get("status"))
                run_ids += [r["mlflow"]["run_id"] or "" for r in bad if r.get("mlflow")]
                continue
            values[seed] = metric_value(claim, found[0], found[1] if len(found) > 1 else None)
            losses.append(tuple(run_losses(r) for r in found))
            run_ids += [r["mlflow"]["run_id"] or "" for r in found]
            devices.update(r["environment"]["device"] for r in found)
        if failures:
            reason = "; ".join(failures)
        elif len(values) < len(self.seeds):
            reason = f"{len(self.seeds) - len(values)} of {len(self.seeds)} seeds have no result file yet"
        else:
            reason = ""
        return Values(
            values,
            reason,
            run_ids,
            bool(failures),
            statuses == {"DIVERGED"},
            devices,
            invalid="INVALID" in statuses,
            same_runs=same_runs(losses),
        )


def cell_rows(
    profile: str, seeds: list[int], results: Path | str = "results", invalid: dict | None = None
) -> tuple[list[dict], list[dict]]:
    """One row per claim cell (statistics and verdict) and one per headline claim (its tests); the invalid result
    files found go to `invalid` ((experiment id, seed) -> "path: reason")."""
    claims = load_claims()
    invalid = {} if invalid is None else invalid
    runs = load_results(profile, seeds, results, invalid)
    values = CellValues(claims, profile, seeds, runs, load_measurements(profile, results, invalid), invalid)
    rows, cells = [], []
    for c in claims:
        v = values.of(c)
        s = stats.summarize([v.per_seed[k] for k in v.per_seed])
        if v.invalid:
            status = "INVALID"
        elif v.exact or s["n"] == len(seeds):
            status = "MEASURED"
        else:
            status = ("DIVERGED" if v.diverged else "FAILED") if v.failed else ("PARTIAL" if v.per_seed else "MISSING")
        key, base = c.experiment_key(), c.baseline_key()
        cells.append(vd.Cell(c, [v.per_seed[k] for k in v.per_seed], v.exact, status, v.reason, v.devices, v.same_runs))
        rows.append(
            {
                "id": c.id,
                "paper": c.paper,
                "table": c.table,
                "row": c.row,
                "column": c.column,
                "metric": c.metric,
                "unit": c.unit,
                "printed": c.printed,
                "claimed": c.value,
                "n": s["n"],
                "seeds_expected": 0 if v.exact else len(seeds),
                "mean": s["mean"],
                "sd": s["sd"],
                "ci_low": s["ci_low"],
                "ci_high": s["ci_high"],
                "ci_method": s["ci_method"],
                "diff": s["mean"] - c.value if v.per_seed else math.nan,
                "status": status,
                "devices": " | ".join(sorted(v.devices)),
                "experiment": ex.Experiment(*key).id if key else "",
                "baseline_experiment": ex.Experiment(*base).id if base else "",
                "sources": " ".join(v.sources),
            }
        )
    for paper in dict.fromkeys(c.paper for c in claims):
        mine = [i for i, c in enumerate(claims) if c.paper == paper]
        for i, j in zip(mine, vd.judge([cells[i] for i in mine], profile)):
            rows[i].update(
                verdict=j.verdict,
                reason=j.reason,
                band_low=j.band_low,
                band_high=j.band_high,
                p_ttest=j.p_ttest,
                p_equivalence=j.p_equivalence,
                p_cell=j.p_cell,
                p_adjusted=j.p_adjusted,
                correction=vd.correction() if not math.isnan(j.p_cell) else "",
                seeds_needed=j.seeds_needed,
                flag=j.flag,
            )
            if j.verdict == "DIVERGED" and rows[i]["status"] == "MEASURED":  # a NaN or infinite seed value
                rows[i]["status"] = "DIVERGED"
    return rows, headline_rows(claims, values, profile)


def headline_rows(claims, values: "CellValues", profile: str) -> list[dict]:
    cfg = vd.tolerances()
    by_id = {c.id: c for c in claims}
    printed = {c.id: c.value for c in claims}
    out = []
    found = load_headlines()

    def judge(hs, vals):  # the claims of one paper, on these values
        rules = vd.profile_rules(profile, hs[0].paper if hs else None)
        return hl.judge(
            hs,
            {i: vals.of(by_id[i]).per_seed for h in hs for i in h.cell_ids()},
            cfg["alpha"],
            rules["headlines"],
            rules["why"],
            cfg["correction"],
            cfg["identical_sd"],
        )

    under = headline_readings(claims, values, profile, found, judge)
    for paper in dict.fromkeys(c.paper for c in claims):
        mine = [h for h in found if h.paper == paper]
        for h, o in zip(mine, judge(mine, values)):
            ok, numbers = as_printed(h, printed)
            out.append(
                {
                    "id": h.id,
                    "paper": h.paper,
                    "where": h.where,
                    "relation": h.relation,
                    "cells": " ".join(h.cell_ids()),
                    "as_printed": "yes" if ok else "no",
                    "printed_numbers": numbers,
                    "n": o.n,
                    "pairs": o.pairs,
                    "diff": o.diff,
                    "p_holds": o.p_holds,
                    "p_reversed": o.p_reversed,
                    "p_two_sided": o.p_two_sided,
                    "p_adjusted": o.p_adjusted,
                    "correction": cfg["correction"] if not math.isnan(o.p_adjusted) else "",
                    "test": o.test,
                    "verdict": o.verdict,
                    "reason": o.reason,
                }
            )
            outcomes = [(rd.Reading(), "primary", o.test, 0, len(h.cell_ids()))] + under.get(h.id, [])
            out[-1]["readings"], out[-1]["holds_under"], out[-1]["readings_note"] = rd.summary(outcomes)
    return out


def claim_experiments(claim: Claim, claims: list[Claim]) -> list["ex.Experiment"]:
    """The experiments a cell's value comes from (a derived cell's: its members')."""
    if claim.derived_from:
        return [e for m in members(claim, claims) for e in claim_experiments(m, claims)]
    if claim.metric in det.MODEL_METRICS or claim.metric == "flops_reduction_pct":
        spec = ex.grid(claim.paper).get("flops_from_runs")
        if claim.method in ("", "backprop") or not spec:
            return []
        return [ex.Experiment(claim.paper, spec["dataset"], claim.model, m) for m in (claim.method, "backprop")]
    return [ex.Experiment(*k) for k in (claim.experiment_key(), claim.baseline_key()) if k]


def headline_readings(claims, values: "CellValues", profile: str, found, judge) -> dict[str, list]:
    """Claim id -> [(reading, basis, test, cells it covers, cells)] for every reading other than the primary that
    the claim's experiments have in this profile; each reading's claims are tested (and corrected) together."""
    readings = rd.readings(profile)
    by_id = {c.id: c for c in claims}
    exps = {h.id: {i: claim_experiments(by_id[i], claims) for i in h.cell_ids()} for h in found}
    out: dict[str, list] = {}
    for paper in dict.fromkeys(c.paper for c in claims):
        mine = [h for h in found if h.paper == paper]
        per_claim = {h.id: readings.of([e for es in exps[h.id].values() for e in es])[1:] for h in mine}
        for reading in dict.fromkeys(r for rs in per_claim.values() for r in rs):
            subject = [h for h in mine if reading in per_claim[h.id]]
            read = lambda e, r=reading: readings.apply(r, e)  # noqa: E731
            vals = values.under(read)
            for h, o in zip(subject, judge(subject, vals)):
                covered = sum(any(read(e) != e for e in es) for es in exps[h.id].values())
                # a reading whose runs diverged (Eq. 7 as printed) has no values: say so, not MISSING
                test = (
                    "DIVERGED"
                    if o.test == "MISSING" and any(vals.of(by_id[i]).diverged for i in h.cell_ids())
                    else o.test
                )
                out.setdefault(h.id, []).append((reading, readings.basis(reading), test, covered, len(h.cell_ids())))
    return out


def _fmt(v):
    return "" if isinstance(v, float) and math.isnan(v) else (f"{v:.10g}" if isinstance(v, float) else v)


def write_csv(path: Path, columns: list[str], rows: list[dict]):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, columns, lineterminator="\n")
        w.writeheader()
        w.writerows({k: _fmt(v) for k, v in r.items()} for r in rows)
    tmp.replace(path)


def seeds_short(base: Path, seed_list: list[int]) -> str:
    """'' when every experiment with a result file under `base` (results/<profile>) has one for each seed of
    `seed_list`; else one line: how many of those seeds were found, per experiment, grouped by count (the cells of
    those experiments are PARTIAL: fewer seeds than asked)."""
    wanted = {f"seed{s}.json" for s in seed_list}
    found: dict[int, list[str]] = defaultdict(list)
    with_files = 0
    for folder in sorted((base / "runs").glob("*/")):
        names = {p.name for p in folder.glob("seed*.json")}
        if names:
            with_files += 1
            if len(names & wanted) < len(wanted):
                found[len(names & wanted)].append(folder.name)
    if not found:
        return ""
    asked = ", ".join(map(str, seed_list[:5])) + (", ..." if len(seed_list) > 5 else "")
    groups = "; ".join(
        f"{n} of {len(seed_list)} for {len(eids)} ({', '.join(eids[:3])}"
        f"{f', {len(eids) - 3} more' if len(eids) > 3 else ''})"
        for n, eids in sorted(found.items())
    )
    return (
        f"{len(seed_list)} seed(s) asked ({asked}) but fewer found for {sum(map(len, found.values()))} of "
        f"{with_files} experiment(s) with result files: {groups}; their cells count only those"
    )


def aggregate(profile: str, results: Path | str = "results", seeds=None, skip_invalid: bool = False) -> Path:
    """Write cells.csv, headlines.csv, companions.csv and aggregate.json; an invalid result file (bench.run.results)
    is used nowhere and its cells say why; unless `skip_invalid`, BenchError after writing when there is one."""
    ex.profile_settings(profile)
    seed_list = ex.seeds(profile, seeds)
    invalid = {}
    vd.tolerances()  # a bad tolerances file is named before anything else
    if not Path(results).is_dir():  # a typo'd --results: say so, not "no result files" under a folder that is not there
        raise BenchError(f"{results}: no such folder (--results)")
    base = Path(results) / profile
    if not any(base.glob("runs/*/seed*.json")) and not any(base.glob("models/*.json")):
        raise BenchError(
            f"{base}: no result files (runs/<experiment>/seed<k>.json) and no model measurements: "
            f"nothing to aggregate (run the workflow with --config profile={profile}, or point --results "
            "at the folder that holds them)"
        )
    rows, headline = cell_rows(profile, seed_list, results, invalid)
    out = Path(results) / profile / "cells.csv"
    write_csv(out, COLUMNS, rows)
    write_csv(Path(results) / profile / "headlines.csv", HEADLINE_COLUMNS, headline)
    write_csv(
        Path(results) / profile / "companions.csv",
        COMPANION_COLUMNS,
        companion_rows(profile, seed_list, results, invalid),
    )
    write_json_atomic(
        Path(results) / profile / "aggregate.json",
        {"profile": profile, "seeds": seed_list, "correction": vd.correction(), "alpha": vd.tolerances()["alpha"]},
    )
    if invalid and not skip_invalid:
        first = invalid[min(invalid, key=str)]
        raise BenchError(
            f"{len(invalid)} invalid result file(s), used nowhere (their cells read INVALID in {out}); "
            f"first: {first}; fix or delete them, or aggregate with --skip-invalid"
        )
    short = seeds_short(base, seed_list)  # said once it succeeded (an error above is the one line on stderr)
    if short:
        print(f"bench aggregate: {short}", file=sys.stderr)
    return out
