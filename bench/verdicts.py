"""Per-cell verdicts: a cell's per-seed values judged against its printed value, within the tolerance that
bench/tolerances.yaml fixes for its metric and profile.

For a cell with n >= 2 seeds, three one-sided t-tests against the tolerance band [claimed - d, claimed + d]:
inside it (TOST, the equivalence test), above it and below it. Their rejection regions are disjoint, so a cell's
verdict rests on the smallest of the three p-values; Holm's correction runs over the tested cells of one paper.
  REPRODUCED      equivalent: the mean is inside the band (TOST significant after Holm)
  BETTER          significantly beyond the band on the better side (higher accuracy, larger saving, ...)
  NOT REPRODUCED  significantly beyond the band on the worse side (or either side, for counts without a
                  better direction)
  INCONCLUSIVE    none significant; with the seeds that would likely settle it at the observed mean and spread
  NOT COMPARABLE  a profile that is not the papers' settings (smoke, check, scaled), or an absolute time or
                  memory measured on other hardware than the paper's
  MISSING, FAILED, DIVERGED  with the reason (a cell with any failed seed is not judged on its survivors)
A cell computed from the model alone (parameters, FLOPs) has one exact value: REPRODUCED when it rounds to the
printed value, else NOT REPRODUCED. The papers print single values without seeds or spreads, so each printed
value is treated as a point.
"""
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from bench import BenchError
from bench import stats
from bench.registry import HIGHER_IS_BETTER, Claim, papers, printed_decimals

TOLERANCES = Path(__file__).parent / "tolerances.yaml"


@cache
def tolerances() -> dict:
    from bench.schema import check

    with open(TOLERANCES, encoding="utf-8") as f:
        return check(yaml.safe_load(f), "tolerances", TOLERANCES)


def profile_rules(profile: str) -> dict:
    rules = tolerances()["profiles"]
    if profile not in rules:
        raise BenchError(f"bench/tolerances.yaml says nothing about profile '{profile}' (has: {', '.join(rules)})")
    return rules[profile]


def band(claim: Claim) -> float:
    """The tolerance d around the printed value, in the cell's unit (0 for exact cells)."""
    spec = tolerances()["metrics"][claim.metric]
    if "points" in spec:
        return float(spec["points"])
    if "relative" in spec:
        return float(spec["relative"]) * abs(claim.value)
    return 0.0


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
    tolerance: float = math.nan
    p_ttest: float = math.nan       # two-sided one-sample t-test against the printed value
    p_equivalence: float = math.nan  # TOST against the tolerance band
    p_cell: float = math.nan        # the smallest of the three one-sided band tests
    p_holm: float = math.nan        # p_cell after Holm within the paper
    seeds_needed: str = ""


def _band_tests(values: list[float], claimed: float, d: float) -> dict:
    return {"inside": stats.tost(values, claimed - d, claimed + d),
            "above": stats.p_greater(values, claimed + d),
            "below": stats.p_less(values, claimed - d)}


def _outcome(side: str, higher_is_better) -> str:
    if side == "inside":
        return "REPRODUCED"
    if higher_is_better is None:
        return "NOT REPRODUCED"
    return "BETTER" if (side == "above") == higher_is_better else "NOT REPRODUCED"


def _seeds_needed(values: list[float], claimed: float, d: float, alpha: float, power: float) -> str:
    mean, sd = stats.mean_sd(values)
    if mean > claimed + d:
        effects = [mean - claimed - d]
    elif mean < claimed - d:
        effects = [claimed - d - mean]
    else:
        effects = [mean - (claimed - d), claimed + d - mean]
    n = stats.seeds_needed(effects, sd, alpha, power)
    if n is None:
        return "no number of seeds: the observed mean sits on the tolerance boundary" if min(effects) <= 0 \
            else "more than 10,000"
    return str(n)


def judge(cells: list[Cell], profile: str) -> list[Judgement]:
    """The verdict of each cell of ONE paper (Holm's correction is over the cells passed together)."""
    cfg, rules = tolerances(), profile_rules(profile)
    alpha = cfg["alpha"]
    out, tested = [], []
    for cell in cells:
        c, n = cell.claim, len(cell.values)
        j = Judgement("", tolerance=band(c))
        if cell.status in ("MISSING", "FAILED", "DIVERGED") or n == 0:
            j.verdict, j.reason = (cell.status if cell.status != "MEASURED" else "MISSING"), cell.reason
        elif cell.exact:
            j.verdict = "REPRODUCED" if rounds_to_printed(c, cell.values[0]) else "NOT REPRODUCED"
            j.reason = "computed from the model: reproduced when it rounds to the printed value"
            j.tolerance = 0.0
        elif not rules["comparable"]:
            j.verdict, j.reason = "NOT COMPARABLE", rules["why"]
        elif other_hardware := hardware_note(c, cell.devices):
            j.verdict, j.reason = "NOT COMPARABLE", other_hardware
        elif n == 1:
            j.verdict = "INCONCLUSIVE"
            j.reason = "one seed: no spread to test with"
            j.seeds_needed = "at least 3"
        else:
            tests = _band_tests(cell.values, c.value, j.tolerance)
            side = min(tests, key=lambda k: (tests[k], k))
            j.p_ttest = stats.p_two_sided(cell.values, c.value)
            j.p_equivalence, j.p_cell = tests["inside"], tests[side]
            tested.append((j, side, cell))
            if cell.status == "PARTIAL":
                j.reason = cell.reason
        out.append(j)
    adjusted = stats.holm([j.p_cell for j, _, _ in tested])
    for (j, side, cell), p in zip(tested, adjusted):
        j.p_holm = p
        if p < alpha:
            j.verdict = _outcome(side, HIGHER_IS_BETTER[cell.claim.metric])
        else:
            j.verdict = "INCONCLUSIVE"
            # Bonferroni's level, the strictest step of Holm's: seeds enough for any place in the order
            j.seeds_needed = _seeds_needed(cell.values, cell.claim.value, j.tolerance, alpha / len(tested),
                                           cfg["power"])
    return out
