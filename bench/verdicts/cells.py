"""Per-cell verdicts: a cell's per-seed values judged against its printed value, within the band that
bench/tolerances.yaml fixes for its metric and profile.

For a cell with n >= 2 seeds, three one-sided t-tests against the band (low, high) around the printed value: inside
it (TOST, the equivalence test), above it and below it. The three conclusions partition the line (a mean on an edge
counts as outside), so at any true mean exactly one is right; each test has level alpha where its conclusion is
wrong, and the cell's p-value is the smallest of the three (the conclusion it points to). The p-values of a
paper's tested cells are corrected together (bench/tolerances.yaml `correction`: Benjamini-Hochberg's false
discovery rate by default, Benjamini-Yekutieli's or Holm's family-wise rate as options):
  REPRODUCED      equivalent: the mean is inside the band
  BETTER          significantly beyond the band on the better side (higher accuracy, larger saving, ...)
  NOT REPRODUCED  significantly beyond the band on the worse side (or either side, for counts without a
                  better direction)
  INCONCLUSIVE    none significant; with the seeds that would likely settle it at the observed mean and spread
                  (exact TOST power at the level the paper's correction reached); also one seed, and seeds whose
                  values are identical (flagged: the seed likely never reached the run)
  NOT COMPARABLE  a profile that is not the papers' settings (smoke, check, scaled), or an absolute time or
                  memory measured on other hardware than the paper's
  MISSING, FAILED, DIVERGED  with the reason (a cell with any failed seed is not judged on its survivors; a cell
                  with a NaN or infinite seed value is DIVERGED)
A cell computed from the model alone (parameters, FLOPs) has one exact value: REPRODUCED when it rounds to the
printed value, else NOT REPRODUCED. The papers print single values without seeds or spreads, so each printed
value is treated as a point.
"""
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path


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


RULES = {"bh": ("Benjamini-Hochberg", "false discovery rate"), "by": ("Benjamini-Yekutieli", "false discovery rate"),
         "holm": ("Holm", "family-wise error rate")}
GUARANTEES = {
    "bh": "among a paper's decided cells (REP, BETTER, NOT REP) the expected share of wrong verdicts is at most "
          "{pct:g} % (the false discovery rate); a single verdict can still be wrong",
    "by": "among a paper's decided cells (REP, BETTER, NOT REP) the expected share of wrong verdicts is at most "
          "{pct:g} % under any dependence between cells (the false discovery rate); a single verdict can still be "
          "wrong",
    "holm": "the chance of even one wrong verdict among a paper's cells is at most {pct:g} % (the family-wise "
            "error rate)",
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
    decimals = printed_decimals(claim.printed)
    return round(value, decimals) == round(claim.value, decimals)


def hardware_note(claim: Claim, devices: set[str]) -> str:
    """Why an absolute time or memory cell cannot be compared on these devices ("" when it can)."""
    if not tolerances()["metrics"][claim.metric].get("hardware_dependent"):
        return ""
    meta = papers()[claim.paper]
    pattern = meta.get("hardware_match")
    if pattern and devices and all(re.search(pattern, d) for d in devices):
        return ""
    return (f"absolute {claim.metric.replace('_', ' ')} measured on {', '.join(sorted(devices)) or 'unknown hardware'}; "
            f"the paper's: {meta.get('hardware', 'not stated')}")


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


@dataclass
class Judgement:
    verdict: str
    reason: str = ""
    band_low: float = math.nan
    band_high: float = math.nan
    p_ttest: float = math.nan       # two-sided one-sample t-test against the printed value
    p_equivalence: float = math.nan  # TOST against the band
    p_cell: float = math.nan        # the smallest of the three one-sided band tests
    p_adjusted: float = math.nan    # p_cell after the paper's correction (bench/tolerances.yaml `correction`)
    seeds_needed: str = ""
    flag: str = ""                  # "identical seeds" where the seeds gave one value


def _band_tests(values: list[float], low: float, high: float) -> dict:
    return {"inside": stats.tost(values, low, high),
            "above": stats.p_greater(values, high),
            "below": stats.p_less(values, low)}


def _outcome(side: str, higher_is_better) -> str:
    if side == "inside":
        return "REPRODUCED"
    if higher_is_better is None:
        return "NOT REPRODUCED"
    return "BETTER" if (side == "above") == higher_is_better else "NOT REPRODUCED"


def seeds_needed(values: list[float], low: float, high: float, level: float, power: float) -> str:
    """The seeds at which the test that the observed mean points to would reach `power` at `level`, taking the
    observed mean and spread as the truth: the exact TOST power inside the band, the one-sided t-test's outside."""
    mean, sd = stats.mean_sd(values)
    if mean > high:
        at = lambda n: stats.power_one_sided(mean - high, sd, n, level)  # noqa: E731
    elif mean < low:
        at = lambda n: stats.power_one_sided(low - mean, sd, n, level)  # noqa: E731
    elif low < mean < high:
        at = lambda n: stats.power_tost(mean - low, high - mean, sd, n, level)  # noqa: E731
    else:
        return "no number of seeds: the observed mean sits on the band's edge"
    n = stats.seeds_needed(at, power)
    return "more than 10,000" if n is None else str(n)


def non_finite(values: list[float]) -> str:
    bad = [v for v in values if not math.isfinite(v)]
    return f"{len(bad)} of {len(values)} seed values are not finite ({bad[0]!r}): no verdict from them" if bad else ""


def judge(cells: list[Cell], profile: str, with_seeds_needed: bool = True,
          method: str | None = None) -> list[Judgement]:
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
        elif stats.identical(cell.values, cfg["identical_sd"]):  # floating-point noise is no spread
            j.verdict, j.flag = "INCONCLUSIVE", "identical seeds"
            j.reason = (f"the {n} seeds gave identical values: the seed likely never reached the run; a spread of "
                        "zero cannot be tested")
        else:
            tests = _band_tests(cell.values, low, high)
            side = min(tests, key=lambda k: (tests[k], k))
            j.p_ttest = stats.p_two_sided(cell.values, c.value)
            j.p_equivalence, j.p_cell = tests["inside"], tests[side]
            tested.append((j, side, cell))
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
            if with_seeds_needed:
                j.seeds_needed = seeds_needed(cell.values, j.band_low, j.band_high, level, cfg["power"])
    return out
