"""Headline claims tested on the reproduced runs (the claims themselves: bench/claims/headlines.py).

On the runs, the per-seed differences A - B (paired: both sides from the same seeds) get one-sided t-tests for the
relation and for its reverse:
  HOLDS            the relation is significant for every pair of the claim (an intersection-union test: no
                   correction)
  holds on k of n pairs (n - k untested)
                   the same for a pairwise claim with only k of its n pairs run (`only=` on a limited budget) or
                   testable: never a plain HOLDS, since the untested pairs may fail
  REVERSED         the reverse is significant for some pair (Holm over the pairs of the claim), even where other
                   pairs are missing or have one seed
  NOT SIGNIFICANT  neither
  DIVERGED         a seed value of one of its cells is NaN or infinite: no test
The claim's p-value is two-sided, 2 x min(p holds, p reversed) capped at 1: at a true difference on the relation's
boundary (A = B for "greater") both conclusions are wrong. For "within" (|A - B| <= margin) the two conclusions
partition the line, like a cell's band: the reverse's p is already twice the smaller way out of the margin, and
the claim's p is min(p holds, p reversed), doubled once only. The paper's claims are corrected together as its
cells are (bench/tolerances.yaml `correction`). A side may mix cells with one exact value (computed from the model)
and per-seed cells: the exact value joins every seed. A profile that does not test headline claims
(bench/tolerances.yaml) gives NOT COMPARABLE and shows the test on its runs beside it.
"""

import math
from dataclasses import dataclass

from bench.claims.headlines import Headline, holds, reversed_
from bench.verdicts import stats


def p_values(relation: str, diffs: list[float], margin: float = 0.0) -> tuple[float, float]:
    """(p of the relation, p of its reverse) from one-sided t-tests on the per-seed differences A - B."""
    if relation == "within":
        # the two ways out of the band are disjoint: twice the smaller one-sided p bounds the reverse's
        return (
            stats.tost(diffs, -margin, margin),
            min(1.0, 2.0 * min(stats.p_greater(diffs, margin), stats.p_less(diffs, -margin))),
        )
    bound = {"greater": 0.0, "less": 0.0, "at_least": -margin, "at_most": margin}[relation]
    up, down = stats.p_greater(diffs, bound), stats.p_less(diffs, bound)
    return (up, down) if relation in ("greater", "at_least") else (down, up)


def side_values(ids: tuple, per_cell: dict[str, dict]) -> dict:
    """seed -> the mean of the cells' values (key None: every cell exact, one value). A cell with one exact value
    joins every seed of the per-seed cells; the seeds are those every per-seed cell has ({} when a cell has no
    values)."""
    cells = [per_cell.get(i, {}) for i in ids]
    if not cells or any(not c for c in cells):
        return {}
    if all(None in c for c in cells):
        return {None: sum(c[None] for c in cells) / len(cells)}
    seeds = set.intersection(*[{k for k in c if k is not None} for c in cells if None not in c])
    return {s: sum(c[None] if None in c else c[s] for c in cells) / len(cells) for s in sorted(seeds)}


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
    test: str  # HOLDS / REVERSED / NOT SIGNIFICANT / MISSING / DIVERGED
    verdict: str = ""  # the test, or NOT COMPARABLE in a profile that does not test headlines
    reason: str = ""
    n: int = 0
    diff: float = math.nan  # mean of A - B (first pair tested), in the cells' unit
    p_holds: float = math.nan
    p_reversed: float = math.nan
    p_two_sided: float = math.nan  # 2 x min(p_holds, p_reversed), capped at 1 (min for "within"): what the
    #                                correction sees
    p_adjusted: float = math.nan
    pairs: str = ""  # "k of n" where only k of the claim's n pairs could be tested
    relation: str = ""


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
            untested.append(
                f"identical per-seed differences for {', '.join(a)}: the seed likely never reached the runs"
            )
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
    out = Outcome(
        "", n=min(ns), diff=diffs[0], p_holds=max(p_hold), p_reversed=min(stats.holm(p_rev)), relation=h.relation
    )
    if untested:
        out.pairs = f"{len(p_hold)} of {total}"
        out.reason = f"partial: {len(p_hold)} of {total} pairs tested; " + "; ".join(dict.fromkeys(untested))
    return out


def judge(
    headlines: list[Headline],
    per_cell: dict[str, dict],
    alpha: float,
    test_claims: bool,
    why_not: str = "",
    method: str = "bh",
    identical_sd: float = 1e-7,
) -> list[Outcome]:
    """Every claim of ONE paper: tested, then corrected (`method`: bh, by or holm) over the paper's tested claims."""
    outs = [test(h, per_cell, identical_sd) for h in headlines]
    tested = [o for o in outs if not o.test]
    for o in tested:
        once = o.relation == "within"  # its reverse's p is doubled already (p_values)
        o.p_two_sided = min(1.0, (1.0 if once else 2.0) * min(o.p_holds, o.p_reversed))
    for o, p in zip(tested, stats.adjust([o.p_two_sided for o in tested], method)):
        o.p_adjusted = p
        if p < alpha:
            o.test = "HOLDS" if o.p_holds <= o.p_reversed else "REVERSED"
            if o.test == "HOLDS" and o.pairs:  # only k of the n pairs tested: the others may fail
                k, n = (int(x) for x in o.pairs.split(" of "))
                o.test = f"holds on {k} of {n} pairs ({n - k} untested)"
        else:
            o.test = "NOT SIGNIFICANT"
    for o in outs:
        o.verdict = o.test if test_claims or o.test in ("MISSING", "DIVERGED") else "NOT COMPARABLE"
        if not test_claims and o.test not in ("MISSING", "DIVERGED"):
            o.reason = why_not + (f"; {o.reason}" if o.reason else "")
    return outs
