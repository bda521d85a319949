"""Headline claims tested on the reproduced runs (the claims themselves: bench/claims/headlines.py).

On the runs, the per-seed differences A - B (paired: both sides from the same seeds) get one-sided t-tests for the
relation and for its reverse:
  HOLDS            the relation is significant for every pair tested (an intersection-union test: no correction)
  REVERSED         the reverse is significant for some pair (Holm over the pairs of the claim), even where other
                   pairs are missing or have one seed
  NOT SIGNIFICANT  neither
  DIVERGED         a seed value of one of its cells is NaN or infinite: no test
A pairwise claim with only some pairs run (`only=` on a limited budget) is tested on the pairs that have values
and says so ("k of n pairs"). The claim's p-value is the two-sided 2 x min(p holds, p reversed), capped at 1, and
the paper's claims are corrected together as its cells are (bench/tolerances.yaml `correction`). A profile that
does not test headline claims (bench/tolerances.yaml) gives NOT COMPARABLE and shows the test on its runs beside it.
"""
import math
from dataclasses import dataclass

from bench.claims.headlines import Headline, holds, reversed_
from bench.verdicts import stats


def p_values(relation: str, diffs: list[float], margin: float = 0.0) -> tuple[float, float]:
    """(p of the relation, p of its reverse) from one-sided t-tests on the per-seed differences A - B."""
    if relation == "within":
        # the two ways out of the band are disjoint: twice the smaller one-sided p bounds the reverse's
        return (stats.tost(diffs, -margin, margin),
                min(1.0, 2.0 * min(stats.p_greater(diffs, margin), stats.p_less(diffs, -margin))))
    bound = {"greater": 0.0, "less": 0.0, "at_least": -margin, "at_most": margin}[relation]
    up, down = stats.p_greater(diffs, bound), stats.p_less(diffs, bound)
    return (up, down) if relation in ("greater", "at_least") else (down, up)


def side_values(ids: tuple, per_cell: dict[str, dict]) -> dict:
    """seed -> the mean of the cells' values (key None: every cell exact, one value)."""
    cells = [per_cell.get(i, {}) for i in ids]
    if cells and all(None in c for c in cells):
        return {None: sum(c[None] for c in cells) / len(cells)}
    seeds = set.intersection(*[{k for k in c if k is not None} for c in cells]) if cells else set()
    return {s: sum(c[s] if s in c else c[None] for c in cells) / len(cells) for s in sorted(seeds)
            if all(s in c or None in c for c in cells)}


def differences(a: tuple, b, per_cell: dict[str, dict]) -> list[float] | float | None:
    """Per-seed A - B over the seeds both sides have (a float when both are exact; None when nothing pairs)."""
    va = side_values(a, per_cell)
    vb = {None: b} if not isinstance(b, tuple) else side_values(b, per_cell)
    if not va or not vb:
        return None
    if None in va and None in vb:
        return va[None] - vb[None]
    seeds = sorted((set(va) | set(vb)) - {None})
    seeds = [s for s in seeds if (s in va or None in va) and (s in vb or None in vb)]
    return [va.get(s, va.get(None)) - vb.get(s, vb.get(None)) for s in seeds] or None


@dataclass
class Outcome:
    test: str                      # HOLDS / REVERSED / NOT SIGNIFICANT / MISSING / DIVERGED
    verdict: str = ""              # the test, or NOT COMPARABLE in a profile that does not test headlines
    reason: str = ""
    n: int = 0
    diff: float = math.nan         # mean of A - B (first pair tested), in the cells' unit
    p_holds: float = math.nan
    p_reversed: float = math.nan
    p_two_sided: float = math.nan  # 2 x min(p_holds, p_reversed), capped at 1: what the correction sees
    p_adjusted: float = math.nan
    pairs: str = ""                # "k of n" where only k of the claim's n pairs could be tested


def test(h: Headline, per_cell: dict[str, dict], identical_sd: float = 1e-7) -> Outcome:
    """The claim tested on the per-seed values of its cells (before the paper-wide correction)."""
    bad = [(i, s, v) for i in h.cell_ids() for s, v in per_cell.get(i, {}).items() if not math.isfinite(v)]
    if bad:
        i, s, v = bad[0]
        return Outcome("DIVERGED", reason=f"{i} seed {s} is {v!r}: no test on non-finite values")
    p_hold, p_rev, ns, diffs, untested, seen = [], [], [], [], [], []
    for a, b, rel in h.pairs():
        d = differences(a, b, per_cell)
        if d is None:
            missing = [i for i in a + (b if isinstance(b, tuple) else ()) if not per_cell.get(i)]
            untested.append("no values for " + ", ".join(missing or a))
            continue
        if isinstance(d, float):  # both sides exact: the relation is decided without a test
            p_hold.append(0.0 if holds(rel, d, h.margin) else 1.0)
            p_rev.append(0.0 if reversed_(rel, d, h.margin) else 1.0)
            ns.append(0)
            diffs.append(d)
            continue
        seen.append((len(d), sum(d) / len(d)))
        if len(d) < 2:
            untested.append(f"{len(d)} seed with values on both sides of {', '.join(a)}: no test")
            continue
        if stats.identical(d, identical_sd):
            untested.append(f"identical per-seed differences for {', '.join(a)}: the seed likely never reached "
                            "the runs")
            continue
        ph, pr = p_values(rel, d, h.margin)
        p_hold.append(ph)
        p_rev.append(pr)
        ns.append(len(d))
        diffs.append(sum(d) / len(d))
    total = len(h.pairs())
    if not p_hold:
        status = "MISSING" if all(u.startswith("no values") for u in untested) else "NOT SIGNIFICANT"
        n, diff = seen[0] if seen else (0, math.nan)
        return Outcome(status, reason="; ".join(dict.fromkeys(untested)), n=n, diff=diff)
    out = Outcome("", n=min(ns), diff=diffs[0], p_holds=max(p_hold), p_reversed=min(stats.holm(p_rev)))
    if untested:
        out.pairs = f"{len(p_hold)} of {total}"
        out.reason = f"partial: {len(p_hold)} of {total} pairs tested; " + "; ".join(dict.fromkeys(untested))
    return out


def judge(headlines: list[Headline], per_cell: dict[str, dict], alpha: float, test_claims: bool,
          why_not: str = "", method: str = "bh", identical_sd: float = 1e-7) -> list[Outcome]:
    """Every claim of ONE paper: tested, then corrected (`method`: bh, by or holm) over the paper's tested claims."""
    outs = [test(h, per_cell, identical_sd) for h in headlines]
    tested = [o for o in outs if not o.test]
    for o in tested:
        o.p_two_sided = min(1.0, 2.0 * min(o.p_holds, o.p_reversed))
    for o, p in zip(tested, stats.adjust([o.p_two_sided for o in tested], method)):
        o.p_adjusted = p
        if p < alpha:
            o.test = "HOLDS" if o.p_holds <= o.p_reversed else "REVERSED"
        else:
            o.test = "NOT SIGNIFICANT"
    for o in outs:
        o.verdict = o.test if test_claims or o.test in ("MISSING", "DIVERGED") else "NOT COMPARABLE"
        if not test_claims and o.test not in ("MISSING", "DIVERGED"):
            o.reason = why_not + (f"; {o.reason}" if o.reason else "")
    return outs
