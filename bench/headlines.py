"""Headline claims: what the papers say their tables show, as data (bench/claims/headlines.yaml), tested on the
reproduced runs and on the printed numbers.

A headline claim compares side A (the mean of some cells) with side B (the mean of other cells, or a constant):
  greater A > B | less A < B | at_least A >= B - margin | at_most A <= B + margin | within |A - B| <= margin
`pairwise: true` asks the relation of every pair a[i], b[i]; `ranking` asks it of every adjacent pair of a list of
groups, best first. On the runs, the per-seed differences A - B (paired: both sides from the same seeds) get
one-sided t-tests for the relation and for its reverse:
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
from functools import cache
from pathlib import Path


from bench import BenchError
from bench import stats
from bench.registry import Claim, load_claims

HEADLINES = Path(__file__).parent / "claims" / "headlines.yaml"
RELATIONS = ("greater", "less", "at_least", "at_most", "within", "ranking")
KEYS = {"id", "paper", "where", "wording", "relation", "a", "b", "value", "margin", "pairwise", "items",
        "lower_is_better", "note"}


@dataclass(frozen=True)
class Headline:
    id: str
    paper: str
    where: str
    wording: str
    relation: str
    a: tuple = ()
    b: tuple = ()
    value: float | None = None
    margin: float = 0.0
    pairwise: bool = False
    items: tuple = ()
    lower_is_better: bool = False
    note: str = ""

    def pairs(self) -> list[tuple[tuple, tuple | float, str]]:
        """The comparisons the claim makes: (side A ids, side B ids or a constant, relation)."""
        if self.relation == "ranking":
            rel = "less" if self.lower_is_better else "greater"
            return [(tuple(x), tuple(y), rel) for x, y in zip(self.items, self.items[1:])]
        other = self.b if self.b else self.value
        if self.pairwise:
            return [((x,), (y,) if self.b else self.value, self.relation)
                    for x, y in zip(self.a, self.b or [None] * len(self.a))]
        return [(tuple(self.a), tuple(other) if self.b else other, self.relation)]

    def cell_ids(self) -> list[str]:
        ids = [i for g in self.items for i in g] + list(self.a) + list(self.b)
        return list(dict.fromkeys(ids))


def _bad(entry: dict, msg: str):
    raise BenchError(f"malformed headline claim {entry.get('id', '?')} in {HEADLINES.name}: {msg}")


def parse(entries: list, claims: list[Claim]) -> list[Headline]:
    """Validate the YAML entries against the registry: known keys and relation, existing cells, one metric and
    unit per comparison, equal lengths for pairwise claims."""
    by_id = {c.id: c for c in claims}
    out, seen = [], set()
    for e in entries:
        if not isinstance(e, dict):
            raise BenchError(f"malformed headline claim in {HEADLINES.name}: {e!r} is not a mapping")
        for key in ("id", "paper", "where", "wording", "relation"):
            if not e.get(key):
                _bad(e, f"'{key}' is missing")
        if set(e) - KEYS:
            _bad(e, f"unknown keys {', '.join(sorted(set(e) - KEYS))}")
        if e["id"] in seen:
            _bad(e, "the id repeats")
        seen.add(e["id"])
        if e["relation"] not in RELATIONS:
            _bad(e, f"relation '{e['relation']}' is not one of {', '.join(RELATIONS)}")
        if e["relation"] == "ranking":
            if len(e.get("items") or []) < 2 or "a" in e or "b" in e:
                _bad(e, "a ranking lists at least two groups in 'items' (and no a/b)")
        else:
            if not e.get("a") or ("b" in e) == ("value" in e):
                _bad(e, "needs 'a' and exactly one of 'b' (cells) or 'value' (a constant)")
            if e.get("pairwise") and e.get("b") and len(e["a"]) != len(e["b"]):
                _bad(e, f"pairwise with {len(e['a'])} cells in a but {len(e['b'])} in b")
        h = Headline(id=e["id"], paper=e["paper"], where=e["where"], wording=" ".join(e["wording"].split()),
                     relation=e["relation"], a=tuple(e.get("a") or ()), b=tuple(e.get("b") or ()),
                     value=None if e.get("value") is None else float(e["value"]), margin=float(e.get("margin", 0)),
                     pairwise=bool(e.get("pairwise", False)), items=tuple(tuple(g) for g in e.get("items") or ()),
                     lower_is_better=bool(e.get("lower_is_better", False)), note=" ".join(str(e.get("note", "")).split()))
        for cid in h.cell_ids():
            if cid not in by_id:
                _bad(e, f"cell '{cid}' is not in the registry")
            if by_id[cid].paper != h.paper:
                _bad(e, f"cell '{cid}' belongs to paper {by_id[cid].paper}, not {h.paper}")
        for a, b, _ in h.pairs():
            kinds = {(by_id[i].metric, by_id[i].unit) for i in a + (b if isinstance(b, tuple) else ())}
            if len(kinds) > 1:
                _bad(e, f"compares cells of different metrics or units: {sorted(kinds)}")
        out.append(h)
    return out


@cache
def load_headlines(path: Path = HEADLINES) -> tuple[Headline, ...]:
    from bench.schema import load

    entries = load(path) or []
    return tuple(parse(entries, load_claims()))


# ---------------------------------------------------------------- the relation on numbers

EPS = 1e-9  # printed numbers are decimals: 82.65 - 79.45 is 3.2000000000000028 in binary, and 3.2 <= 3.2


def holds(relation: str, d: float, margin: float = 0.0) -> bool:
    """The relation on a difference d = A - B."""
    return {"greater": d > EPS, "less": d < -EPS, "at_least": d >= -margin - EPS, "at_most": d <= margin + EPS,
            "within": abs(d) <= margin + EPS}[relation]


def reversed_(relation: str, d: float, margin: float = 0.0) -> bool:
    """The relation's reverse (what REVERSED means) on a difference d = A - B."""
    return {"greater": d < -EPS, "less": d > EPS, "at_least": d < -margin - EPS, "at_most": d > margin + EPS,
            "within": abs(d) > margin + EPS}[relation]


def p_values(relation: str, diffs: list[float], margin: float = 0.0) -> tuple[float, float]:
    """(p of the relation, p of its reverse) from one-sided t-tests on the per-seed differences A - B."""
    if relation == "within":
        # the two ways out of the band are disjoint: twice the smaller one-sided p bounds the reverse's
        return (stats.tost(diffs, -margin, margin),
                min(1.0, 2.0 * min(stats.p_greater(diffs, margin), stats.p_less(diffs, -margin))))
    bound = {"greater": 0.0, "less": 0.0, "at_least": -margin, "at_most": margin}[relation]
    up, down = stats.p_greater(diffs, bound), stats.p_less(diffs, bound)
    return (up, down) if relation in ("greater", "at_least") else (down, up)


def as_printed(h: Headline, printed: dict[str, float]) -> tuple[bool, str]:
    """Whether the claim holds on the printed numbers, and the numbers it rests on (for more than three pairs, the
    pairs that fail, or how many hold)."""
    results = []
    for a, b, rel in h.pairs():
        va = sum(printed[i] for i in a) / len(a)
        vb = b if not isinstance(b, tuple) else sum(printed[i] for i in b) / len(b)
        results.append((holds(rel, va - vb, h.margin), f"{va:.6g} vs {vb:.6g}"))
    ok = all(r for r, _ in results)
    if len(results) <= 3:
        return ok, "; ".join(text for _, text in results)
    failing = [text for r, text in results if not r]
    if not failing:
        return ok, f"all {len(results)} pairs"
    return ok, (f"{len(failing)} of {len(results)} pairs fail: " + "; ".join(failing[:4])
                + ("; ..." if len(failing) > 4 else ""))


# ---------------------------------------------------------------- the test on the runs

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
