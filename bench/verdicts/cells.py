"""Per-cell verdicts: a cell's per-seed values judged against its printed value, within the band that
bench/tolerances.yaml fixes for its metric and profile.

For a cell with n >= 2 seeds, three one-sided t-tests against the band (low, high) around the printed value: inside
it (TOST, the equivalence test), above it and below it. The three conclusions partition the line (a mean on an edge
counts as outside), so at any true mean exactly one is right. The cell's p-value is
    p = min(p_inside, 2 x min(p_above, p_below))
and its verdict the conclusion that p points to. At every true mean and band width, P(wrong verdict and p <= t) <= t
for every level t:
  - inside the band both ways out are wrong, each reaching p <= t (twice its one-sided p) with chance <= t / 2;
  - on or beyond the upper edge (the lower one likewise) "inside" and "below" are wrong, and either needs the mean
    significantly below the upper edge at level t (TOST's upper test, or twice the test against the lower edge,
    which lies below it): chance <= t.
The smallest of the three raw p-values (the rule before) broke the first case when the band is narrow against the
standard error: both ways out at level t each, 2t together (0.099 at 0.05 for a band of width ~0 at 3 seeds; tests/
test_decision_rule.py simulates both). The p-values of a paper's tested cells are corrected together
(bench/tolerances.yaml `correction`). What that guarantees, as far as it is proven: with the per-cell property above,
Benjamini-Hochberg keeps the expected share of wrong verdicts among the decided cells <= q when the cells come from
independent runs (the step-up argument for directional decisions: for each cell, the rejection threshold is fixed by
the other cells); Benjamini-Yekutieli keeps it under any dependence, so also for cells that share runs (a run's
accuracy and its time; an average and its members; savings against one baseline), for which Benjamini-Hochberg's
bound is not proven; Holm's family-wise bound is proven for its first (Bonferroni) step only, with three-way
verdicts its later steps are checked by simulation (`bench power`). The verdicts:
  REPRODUCED      equivalent: the mean is inside the band
  BETTER          significantly beyond the band on the better side (higher accuracy, larger saving, ...)
  NOT REPRODUCED  significantly beyond the band on the worse side (or either side, for counts without a
                  better direction)
  INCONCLUSIVE    none significant; with the seeds that would likely settle it at the observed mean and spread
                  (exact TOST power, or the one-sided test's, at the level the paper's correction reached), and its
                  range over the sd's 80 % interval; also one seed, and seeds whose runs are identical (the same
                  training loss: the seed never reached the run; flagged "identical seeds")
  NOT COMPARABLE  a profile that is not the papers' settings (smoke, check, scaled), or an absolute time or
                  memory measured on other hardware than the paper's
  MISSING, FAILED, DIVERGED  with the reason (a cell with any failed seed is not judged on its survivors; a cell
                  with a NaN or infinite seed value is DIVERGED)
Seeds that gave one value from runs that differ (or that record nothing to tell) are a collapsed result, such as a
network stuck at chance: judged on that value without spread (p 0 where it lies off the band's edges) and flagged
"collapsed". A cell computed from the model alone (parameters, FLOPs) has one exact value: REPRODUCED when it rounds
(half up, in decimal) to the printed value at the printed precision, else NOT REPRODUCED. The papers print single
values without seeds or spreads, so each printed value is treated as a point.
"""

import math
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from pathlib import Path

import numpy as np

from bench import BenchError
from bench.claims.registry import HIGHER_IS_BETTER, Claim, half_ulp, papers, printed_decimals
from bench.verdicts import stats

TOLERANCES = Path(__file__).parent.parent / "tolerances.yaml"


@cache
def tolerances() -> dict:
    from bench.schema import load

    return load(TOLERANCES, "tolerances")


def profile_rules(profile: str, paper: str | None = None) -> dict:
    """The profile's rules; its `why` with `{epochs}` filled in from the resolved configs of the paper's experiments
    (bench.run.targets.epochs_summary; 'a few epochs' without a paper)."""
    rules = tolerances()["profiles"]
    if profile not in rules:
        raise BenchError(f"bench/tolerances.yaml says nothing about profile '{profile}' (has: {', '.join(rules)})")
    out = dict(rules[profile])
    if "{epochs}" in out["why"]:
        from bench.run.targets import epochs_summary

        out["why"] = out["why"].replace("{epochs}", epochs_summary(profile, paper) if paper else "a few epochs")
    return out


def correction() -> str:
    return tolerances()["correction"]


def band(claim: Claim) -> tuple[float, float]:
    """The open band (low, high) around the printed value, in the cell's unit (low == high == value for exact
    cells): the half-width from the metric's rule, plus half a unit of the printed last digit, never crossing zero
    for a metric that keeps its sign (bench/tolerances.yaml says why)."""
    spec, v = tolerances()["metrics"][claim.metric], claim.value
    if spec.get("exact"):
        return v, v
    half = []
    if "points" in spec:
        half.append(float(spec["points"]))
    if "relative" in spec:
        scale = 100.0 - v if spec.get("scale") == "error" else abs(v)
        half.append(float(spec["relative"]) * abs(scale))
    d = min(half) + half_ulp(claim.printed)
    low, high = v - d, v + d
    if spec.get("keeps_sign") and v > 0:
        low = max(low, 0.0)
    elif spec.get("keeps_sign") and v < 0:
        high = min(high, 0.0)
    return low, high


RULES = {
    "bh": ("Benjamini-Hochberg", "false discovery rate"),
    "by": ("Benjamini-Yekutieli", "false discovery rate"),
    "holm": ("Holm", "family-wise error rate"),
}
GUARANTEES = {
    "bh": "among a paper's decided cells (REP, BETTER, NOT REP) the expected share of wrong verdicts is at most "
    "{pct:g} % (the false discovery rate), proven for cells from independent runs (not for cells that share "
    "a run: Benjamini-Yekutieli's option covers those); a single verdict can still be wrong",
    "by": "among a paper's decided cells (REP, BETTER, NOT REP) the expected share of wrong verdicts is at most "
    "{pct:g} % under any dependence between cells (the false discovery rate); a single verdict can still be "
    "wrong",
    "holm": "the chance of even one wrong verdict among a paper's cells is at most {pct:g} % (the family-wise "
    "error rate), proven for its first (Bonferroni) step; its later steps with three-way verdicts are "
    "checked by simulation (bench power)",
}


def rule_name() -> str:
    return RULES[correction()][0]


def rule() -> str:
    """The rule in force in a few words, e.g. 'Benjamini-Hochberg, false discovery rate 0.05'."""
    name, kind = RULES[correction()]
    return f"{name}, {kind} {tolerances()['alpha']:g}"


def guarantee() -> str:
    """The decision rule in force and what it guarantees, in words (for the reports' legend)."""
    a = tolerances()["alpha"]
    level = f"q = {a:g}" if correction() in ("bh", "by") else f"α = {a:g}"
    return f"{rule_name()} over the tested cells of a paper at {level}: " + GUARANTEES[correction()].format(pct=100 * a)


def describe_band(metric: str) -> str:
    """The band rule of one metric in words, from bench/tolerances.yaml."""
    spec = tolerances()["metrics"][metric]
    if spec.get("exact"):
        return "exact"
    parts = []
    if "points" in spec:
        parts.append(f"±{spec['points']:g} point{'s' if spec['points'] != 1 else ''}")
    if "relative" in spec:
        of = "the printed error (100 − value)" if spec.get("scale") == "error" else "the printed value"
        parts.append(f"{'at most ' if parts else '±'}{100 * spec['relative']:g} % of {of}")
    return ", ".join(parts) + (", never crossing zero" if spec.get("keeps_sign") else "")


def rounds_to_printed(claim: Claim, value: float) -> bool:
    """Whether an exact value rounds, half up in decimal (the shortest decimal that reads back as the float: 0.305
    is 0.305, not the binary 0.30499999...), to the printed number at its printed precision ("0.31", "31,203.60")."""
    printed = claim.printed.replace(",", "").split()[0].rstrip("%") if claim.printed.strip() else ""
    try:
        target = Decimal(printed)
    except InvalidOperation:
        target = Decimal(repr(claim.value)).quantize(Decimal(1).scaleb(-printed_decimals(claim.printed)), ROUND_HALF_UP)
    return Decimal(repr(float(value))).quantize(target, ROUND_HALF_UP) == target


def hardware_note(claim: Claim, devices: set[str]) -> str:
    """Why an absolute time or memory cell cannot be compared on these devices ("" when it can)."""
    if not tolerances()["metrics"][claim.metric].get("hardware_dependent"):
        return ""
    meta = papers()[claim.paper]
    pattern = meta.get("hardware_match")
    if pattern and devices and all(re.search(pattern, d) for d in devices):
        return ""
    return (
        f"absolute {claim.metric.replace('_', ' ')} measured on {', '.join(sorted(devices)) or 'unknown hardware'}; "
        f"the paper's: {meta.get('hardware', 'not stated')}"
    )


@dataclass
class Cell:
    """What the verdict of one cell needs: its claim, its per-seed values (or one exact value), its status and
    reason from the aggregate step, and the devices its runs ran on."""

    claim: Claim
    values: list[float]
    exact: bool = False
    status: str = "MEASURED"
    reason: str = ""
    devices: set = field(default_factory=set)
    same_runs: bool | None = None  # the seeds' runs recorded the same training and test losses (the seed never
    #                                reached them); False when they differ, None when they record nothing to tell


@dataclass
class Judgement:
    verdict: str
    reason: str = ""
    band_low: float = math.nan
    band_high: float = math.nan
    p_ttest: float = math.nan  # two-sided one-sample t-test against the printed value
    p_equivalence: float = math.nan  # TOST against the band
    p_cell: float = math.nan  # min(p inside, 2 x min(p above, p below)): level alpha at every true mean
    p_adjusted: float = math.nan  # p_cell after the paper's correction (bench/tolerances.yaml `correction`)
    seeds_needed: str = ""
    flag: str = ""  # "identical seeds" (the seed never reached the runs: not judged) or
    #                                 "collapsed" (one value from runs that differ: judged without spread)


SIDES = ("above", "below", "inside")  # the order that breaks a tie between equal p-values


def band_tests(mean, sd, n, low, high) -> dict:
    """The cell's three band tests from its summaries, element-wise over numpy arrays (sd > 0, n >= 2), so that
    one cell and 20,000 simulated draws are judged by the same code:
      inside  TOST: the larger of the one-sided p-values that the mean is above low and below high
      above   twice the one-sided p-value that the mean is above high (capped at 1)
      below   twice the one-sided p-value that the mean is below low (capped at 1)
    The ways out are doubled because inside the band both of them are wrong (the module's docstring)."""
    mean, sd, n, low, high = (np.asarray(x, dtype=float) for x in (mean, sd, n, low, high))
    p_up_low = stats.p_greater_from(mean, sd, n, low)
    p_down_high = stats.p_greater_from(-mean, sd, n, -high)
    return {
        "above": np.minimum(1.0, 2.0 * stats.p_greater_from(mean, sd, n, high)),
        "below": np.minimum(1.0, 2.0 * stats.p_greater_from(-mean, sd, n, -low)),
        "inside": np.maximum(p_up_low, p_down_high),
    }


def decide(tests: dict) -> tuple:
    """(side, p): per element, the conclusion with the smallest p (ties broken in SIDES order) and that p."""
    stacked = np.stack([np.asarray(tests[k], dtype=float) for k in SIDES])
    side = np.argmin(stacked, axis=0)
    return np.asarray(SIDES)[side], np.take_along_axis(stacked, side[None, ...], axis=0)[0]


def _collapsed_tests(mean: float, low: float, high: float, tol: float) -> dict:
    """The band tests of seeds that gave one value (no spread): the exact limits, 0 for where the value lies and 1
    elsewhere; 0.5 each within `tol` (floating-point noise) of an edge, where no number of seeds decides."""
    if abs(mean - low) <= tol or abs(mean - high) <= tol:
        return {"above": 0.5, "below": 0.5, "inside": 0.5}
    where = "inside" if low < mean < high else "above" if mean > high else "below"
    return {k: 0.0 if k == where else 1.0 for k in SIDES}


def _outcome(side: str, higher_is_better) -> str:
    if side == "inside":
        return "REPRODUCED"
    if higher_is_better is None:
        return "NOT REPRODUCED"
    return "BETTER" if (side == "above") == higher_is_better else "NOT REPRODUCED"


SEEDS_RANGE_CONFIDENCE = 0.8  # the sd's interval behind the range of seeds needed (10 % - 90 %)


def _seeds_at(mean: float, sd: float, low: float, high: float, level: float, power: float) -> int | None:
    if mean > high:  # the ways out are tested at half the level (band_tests)
        at = lambda n: stats.power_one_sided(mean - high, sd, n, level / 2)  # noqa: E731
    elif mean < low:
        at = lambda n: stats.power_one_sided(low - mean, sd, n, level / 2)  # noqa: E731
    else:
        at = lambda n: stats.power_tost(mean - low, high - mean, sd, n, level)  # noqa: E731
    return stats.seeds_needed(at, power)


def _count(n: int | None) -> str:
    return "more than 10,000" if n is None else f"{n:,}"


def seeds_needed(values: list[float], low: float, high: float, level: float, power: float) -> str:
    """The seeds at which the test that the observed mean points to would reach `power` at `level`, taking the
    observed mean and spread as the truth (the exact TOST power inside the band, the one-sided t-test's at half the
    level outside), with the range it spans over the sd's 80 % interval (chi-square): a sd from 3 seeds is uncertain
    by a factor of 3 either way, and the seeds needed with it, e.g. "6 (range 3-40 over the sd's 80 % interval)"."""
    mean, sd = stats.mean_sd(values)
    if not (mean > high or mean < low or low < mean < high):
        return "no number of seeds: the observed mean sits on the band's edge"
    n = _seeds_at(mean, sd, low, high, level, power)
    sd_low, sd_high = stats.sd_interval(sd, len(values), SEEDS_RANGE_CONFIDENCE)
    fewest, most = _seeds_at(mean, sd_low, low, high, level, power), _seeds_at(mean, sd_high, low, high, level, power)
    return (
        f"{_count(n)} (range {_count(fewest)}-{_count(most)} over the sd's {100 * SEEDS_RANGE_CONFIDENCE:g} % interval)"
    )


def non_finite(values: list[float]) -> str:
    bad = [v for v in values if not math.isfinite(v)]
    return f"{len(bad)} of {len(values)} seed values are not finite ({bad[0]!r}): no verdict from them" if bad else ""


def judge(
    cells: list[Cell], profile: str, with_seeds_needed: bool = True, method: str | None = None
) -> list[Judgement]:
    """The verdict of each cell of ONE paper (the correction, bench/tolerances.yaml's unless `method` names one,
    runs over the cells passed together). `with_seeds_needed=False` skips the seeds-needed search (the power
    simulation judges thousands of papers)."""
    cfg, rules = tolerances(), profile_rules(profile, cells[0].claim.paper if cells else None)
    alpha, method = cfg["alpha"], method or cfg["correction"]
    out, tested = [], []
    for cell in cells:
        c, n = cell.claim, len(cell.values)
        low, high = band(c)
        j = Judgement("", band_low=low, band_high=high)
        if cell.status in ("MISSING", "FAILED", "DIVERGED", "INVALID") or n == 0:
            j.verdict = {"MEASURED": "MISSING", "INVALID": "FAILED"}.get(cell.status, cell.status)
            j.reason = cell.reason
        elif why := non_finite(cell.values):
            j.verdict, j.reason = "DIVERGED", why
        elif cell.exact:
            j.verdict = "REPRODUCED" if rounds_to_printed(c, cell.values[0]) else "NOT REPRODUCED"
            j.reason = "computed from the model: reproduced when it rounds to the printed value"
            j.band_low = j.band_high = c.value
        elif not rules["comparable"]:
            j.verdict, j.reason = "NOT COMPARABLE", rules["why"]
        elif other_hardware := hardware_note(c, cell.devices):
            j.verdict, j.reason = "NOT COMPARABLE", other_hardware
        elif n == 1:
            j.verdict = "INCONCLUSIVE"
            j.reason = "one seed: no spread to test with"
            j.seeds_needed = "at least 3"
        elif stats.identical(cell.values, cfg["identical_sd"]) and cell.same_runs:
            j.verdict, j.flag = "INCONCLUSIVE", "identical seeds"
            j.reason = (
                f"the {n} seeds gave identical values from identical runs (the same losses): the seed "
                "never reached the run; rerun with the seed applied"
            )
        elif stats.identical(cell.values, cfg["identical_sd"]):  # floating-point noise is no spread
            mean = stats.mean_sd(cell.values)[0]
            tests = _collapsed_tests(mean, low, high, cfg["identical_sd"] * max(abs(mean), 1.0))
            side, p = decide(tests)
            j.p_equivalence, j.p_cell, j.flag = tests["inside"], float(p), "collapsed"
            j.reason = (
                f"collapsed: the {n} seeds gave one value, {mean:g} (e.g. a network stuck at chance), "
                "judged without spread; "
                + (
                    "the runs' losses differ, so the seeds did reach them"
                    if cell.same_runs is False
                    else "the runs record no losses to tell a collapse from a seed that never reached them"
                )
            )
            if cell.status == "PARTIAL":
                j.reason = f"{cell.reason}; {j.reason}"
            tested.append((j, str(side), cell))
        else:
            mean, sd = stats.mean_sd(cell.values)
            tests = band_tests(mean, sd, n, low, high)
            side, p = decide(tests)
            j.p_ttest = stats.p_two_sided(cell.values, c.value)
            j.p_equivalence, j.p_cell = float(tests["inside"]), float(p)
            tested.append((j, str(side), cell))
            if cell.status == "PARTIAL":
                j.reason = cell.reason
        out.append(j)
    adjusted = stats.adjust([j.p_cell for j, _, _ in tested], method)
    level = stats.level_reached(adjusted, alpha, method)
    for (j, side, cell), p in zip(tested, adjusted):
        j.p_adjusted = p
        if p < alpha:
            j.verdict = _outcome(side, HIGHER_IS_BETTER[cell.claim.metric])
        else:
            j.verdict = "INCONCLUSIVE"
            if j.flag == "collapsed":
                j.seeds_needed = "no number of seeds: the seeds gave one value, on the band's edge"
            elif with_seeds_needed:
                j.seeds_needed = seeds_needed(cell.values, j.band_low, j.band_high, level, cfg["power"])
    return out
