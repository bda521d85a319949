"""Headline claims: what the papers say their tables show, as data (bench/claims/headlines.yaml), checked against
the registry, and the relation they state applied to numbers (the printed ones: `as_printed`).

A headline claim compares side A (the mean of some cells) with side B (the mean of other cells, or a constant):
  greater A > B | less A < B | at_least A >= B - margin | at_most A <= B + margin | within |A - B| <= margin
`pairwise: true` asks the relation of every pair a[i], b[i]; `ranking` asks it of every adjacent pair of a list of
groups, best first. Their test on the reproduced runs is bench/verdicts/headlines.py.
"""

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bench import BenchError
from bench.claims.registry import Claim, load_claims

HEADLINES = Path(__file__).parent / "headlines.yaml"
RELATIONS = ("greater", "less", "at_least", "at_most", "within", "ranking")
KEYS = {
    "id",
    "paper",
    "where",
    "wording",
    "relation",
    "a",
    "b",
    "value",
    "margin",
    "pairwise",
    "items",
    "lower_is_better",
    "note",
}


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
            return [
                ((x,), (y,) if self.b else self.value, self.relation)
                for x, y in zip(self.a, self.b or [None] * len(self.a))
            ]
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
        h = Headline(
            id=e["id"],
            paper=e["paper"],
            where=e["where"],
            wording=" ".join(e["wording"].split()),
            relation=e["relation"],
            a=tuple(e.get("a") or ()),
            b=tuple(e.get("b") or ()),
            value=None if e.get("value") is None else float(e["value"]),
            margin=float(e.get("margin", 0)),
            pairwise=bool(e.get("pairwise", False)),
            items=tuple(tuple(g) for g in e.get("items") or ()),
            lower_is_better=bool(e.get("lower_is_better", False)),
            note=" ".join(str(e.get("note", "")).split()),
        )
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
    return {
        "greater": d > EPS,
        "less": d < -EPS,
        "at_least": d >= -margin - EPS,
        "at_most": d <= margin + EPS,
        "within": abs(d) <= margin + EPS,
    }[relation]


def reversed_(relation: str, d: float, margin: float = 0.0) -> bool:
    """The relation's reverse (what REVERSED means) on a difference d = A - B."""
    return {
        "greater": d < -EPS,
        "less": d > EPS,
        "at_least": d < -margin - EPS,
        "at_most": d > margin + EPS,
        "within": abs(d) > margin + EPS,
    }[relation]


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
    return ok, (
        f"{len(failing)} of {len(results)} pairs fail: "
        + "; ".join(failing[:4])
        + ("; ..." if len(failing) > 4 else "")
    )
