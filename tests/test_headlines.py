"""Headline claims: every relation tested on constructed per-seed values (expected p-values computed here with
scipy's t-test), the printed-number check, the validation of the data file and the shipped claims."""
import re
from pathlib import Path

import pytest
from scipy import stats as st

from bench import BenchError
from bench import headlines as hl
from bench.registry import load_claims, papers

SHARED_PAPERS = Path(__file__).resolve().parents[1].parent / "shared" / "papers"


def claim(relation, a=("a",), b=("b",), **kw):
    kw = {"b": b, **kw} if "value" not in kw else kw
    return hl.Headline(id="p.h1", paper="p", where="Abstract", wording="w", relation=relation, a=tuple(a), **kw)


def seeds(*values):
    return {i: v for i, v in enumerate(values)}


def run(h, per_cell, test_claims=True):
    return hl.judge([h], per_cell, alpha=0.05, test_claims=test_claims, why_not="smoke")[0]


def one_sided(d, mu, alternative):
    return st.ttest_1samp(d, mu, alternative=alternative).pvalue


def test_greater_holds_is_reversed_or_not_significant():
    a, b = seeds(10.0, 11.0, 12.0, 11.5), seeds(8.0, 9.0, 10.5, 9.8)
    d = [x - y for x, y in zip(a.values(), b.values())]
    o = run(claim("greater"), {"a": a, "b": b})
    assert o.test == o.verdict == "HOLDS" and o.n == 4
    assert o.p_holds == pytest.approx(one_sided(d, 0, "greater")) and o.p_holm == pytest.approx(o.p_holds)
    assert o.diff == pytest.approx(sum(d) / 4)
    assert run(claim("greater"), {"a": b, "b": a}).verdict == "REVERSED"
    assert run(claim("less"), {"a": b, "b": a}).verdict == "HOLDS"
    noisy = run(claim("greater"), {"a": seeds(10.0, 8.0, 12.0), "b": seeds(9.0, 10.0, 10.5)})
    assert noisy.verdict == "NOT SIGNIFICANT"


def test_pairing_uses_the_seeds_both_sides_have():
    a, b = seeds(10.0, 11.0, 12.0), {1: 9.0, 2: 10.0, 5: 0.0}
    o = run(claim("greater"), {"a": a, "b": b})
    assert o.n == 2 and o.diff == pytest.approx(2.0)


def test_margins_at_least_at_most_within():
    base = seeds(90.0, 91.0, 92.0, 90.5)
    close = {"a": seeds(89.5, 90.6, 91.4, 90.0), "b": base}  # A - B about -0.5
    assert run(claim("at_least", margin=1.0), close).verdict == "HOLDS"  # A >= B - 1
    d = [x - y for x, y in zip(close["a"].values(), base.values())]
    assert run(claim("at_least", margin=1.0), close).p_holds == pytest.approx(one_sided(d, -1.0, "greater"))
    far = {"a": seeds(87.9, 89.0, 89.9, 88.4), "b": base}  # A - B about -2.1
    assert run(claim("at_least", margin=1.0), far).verdict == "REVERSED"
    assert run(claim("at_most", margin=1.0), {"a": base, "b": far["a"]}).verdict == "REVERSED"
    assert run(claim("within", margin=1.0), close).verdict == "HOLDS"
    tost = max(one_sided(d, -1.0, "greater"), one_sided(d, 1.0, "less"))
    assert run(claim("within", margin=1.0), close).p_holds == pytest.approx(tost)
    assert run(claim("within", margin=1.0), far).verdict == "REVERSED"


def test_a_constant_side():
    saving = {"a": seeds(60.0, 62.0, 61.0, 63.0)}
    assert run(claim("greater", b=(), value=50.0), saving).verdict == "HOLDS"
    assert run(claim("greater", b=(), value=70.0), saving).verdict == "REVERSED"


def test_pairwise_needs_every_pair_and_any_reversal_reverses():
    cells = {"a1": seeds(10.0, 11.0, 12.0, 11.0), "b1": seeds(8.0, 9.0, 10.0, 9.2),
             "a2": seeds(10.0, 11.0, 12.0, 11.0), "b2": seeds(9.0, 12.0, 10.0, 11.5),   # not significant
             "a3": seeds(5.0, 6.0, 7.0, 6.1), "b3": seeds(8.0, 9.0, 10.0, 9.0)}        # reversed
    two = claim("greater", a=("a1", "a2"), b=("b1", "b2"), pairwise=True)
    assert run(two, cells).verdict == "NOT SIGNIFICANT"  # one pair holds, the other does not: not all hold
    held = claim("greater", a=("a1", "a1"), b=("b1", "b1"), pairwise=True)
    assert run(held, cells).verdict == "HOLDS"
    rev = claim("greater", a=("a1", "a3"), b=("b1", "b3"), pairwise=True)
    assert run(rev, cells).verdict == "REVERSED"


def test_ranking_checks_adjacent_groups():
    cells = {"x": seeds(95.0, 96.0, 95.5, 95.8), "y": seeds(90.0, 91.0, 90.2, 90.9), "z": seeds(80.0, 81.0, 80.5, 80.1)}
    rank = hl.Headline(id="p.h2", paper="p", where="Results", wording="w", relation="ranking",
                       items=(("x",), ("y",), ("z",)))
    assert [p[:2] for p in rank.pairs()] == [(("x",), ("y",)), (("y",), ("z",))]
    assert run(rank, cells).verdict == "HOLDS"
    wrong = hl.Headline(id="p.h3", paper="p", where="Results", wording="w", relation="ranking",
                        items=(("x",), ("z",), ("y",)))
    assert run(wrong, cells).verdict == "REVERSED"
    errors = hl.Headline(id="p.h4", paper="p", where="Results", wording="w", relation="ranking",
                         items=(("z",), ("y",), ("x",)), lower_is_better=True)
    assert run(errors, cells).verdict == "HOLDS"


def test_exact_sides_one_seed_missing_and_not_comparable():
    exact = {"a": {None: 5.0}, "b": {None: 3.0}}
    assert run(claim("greater"), exact).verdict == "HOLDS"
    assert run(claim("less"), exact).verdict == "REVERSED"
    single = run(claim("greater"), {"a": seeds(5.0), "b": seeds(3.0)})
    assert single.verdict == "NOT SIGNIFICANT" and "1 seed" in single.reason
    missing = run(claim("greater"), {"a": seeds(5.0, 6.0)})
    assert missing.verdict == "MISSING" and "b" in missing.reason
    smoke = run(claim("greater"), {"a": seeds(10.0, 11.0, 12.0), "b": seeds(8.0, 9.0, 10.5)}, test_claims=False)
    assert smoke.verdict == "NOT COMPARABLE" and smoke.test == "HOLDS" and "smoke" in smoke.reason


def test_holm_over_the_claims_of_a_paper():
    weak = {"c": seeds(10.0, 11.0, 12.0), "d": seeds(9.0, 10.4, 11.7)}
    h = claim("greater", a=("c",), b=("d",))
    p_weak = one_sided([1.0, 0.6, 0.3], 0, "greater")
    assert 0.025 < p_weak < 0.05
    assert run(h, weak).verdict == "HOLDS"  # alone: significant at 0.05
    both = hl.judge([h, h], weak, alpha=0.05, test_claims=True)  # two such claims: Holm doubles the smaller p
    assert [o.p_holm for o in both] == pytest.approx([2 * p_weak, 2 * p_weak])
    assert [o.verdict for o in both] == ["NOT SIGNIFICANT"] * 2
    strong = {"a": seeds(10.0, 11.0, 12.0, 11.0), "b": seeds(8.0, 9.0, 10.0, 9.2)}
    mixed = hl.judge([claim("greater"), h], {**strong, **weak}, alpha=0.05, test_claims=True)
    assert mixed[1].p_holm == pytest.approx(max(2 * mixed[0].p_holds, p_weak))  # Holm's second step: x 1
    assert [o.verdict for o in mixed] == ["HOLDS", "HOLDS"]


def test_as_printed():
    printed = {"a": 10.0, "b": 9.0, "c": 40.0}
    assert hl.as_printed(claim("greater"), printed) == (True, "10 vs 9")
    assert hl.as_printed(claim("within", margin=0.5), printed)[0] is False
    assert hl.as_printed(claim("greater", a=("a", "c"), b=(), value=30.0, pairwise=True), printed)[0] is False


def test_malformed_headlines_are_named():
    claims = load_claims()
    acc, err = "cruciata.1.vgg-11.mnist.sgd.a", "cruciata.1.vgg-11.mnist.sgd.t"
    good = {"id": "cruciata.hx", "paper": "cruciata", "where": "Abstract", "wording": "w", "relation": "greater",
            "a": [acc], "b": ["cruciata.1.vgg-11.mnist.freezing.a"]}
    assert hl.parse([good], claims)[0].id == "cruciata.hx"
    cases = [({"a": ["no.such.cell"]}, "not in the registry"), ({"b": [err]}, "different metrics"),
             ({"relation": "bigger"}, "relation 'bigger'"), ({"b": [acc, acc], "pairwise": True}, "pairwise"),
             ({"value": 5}, "exactly one of"), ({"colour": "red"}, "unknown keys"), ({"where": ""}, "'where'")]
    for change, message in cases:
        with pytest.raises(BenchError, match=message):
            hl.parse([{**good, **change}], claims)


def test_the_shipped_headline_claims():
    found = hl.load_headlines()
    by_paper = {p: [h for h in found if h.paper == p] for p in papers()}
    assert all(len(v) >= 2 for v in by_paper.values()), {p: len(v) for p, v in by_paper.items()}
    if not SHARED_PAPERS.exists():
        from tests.conftest import shared_missing

        shared_missing("the paper texts (../shared/papers)")
        return
    for paper, meta in papers().items():
        text = next(SHARED_PAPERS.glob(f"{meta['source']}_*.txt")).read_text(encoding="utf-8")
        flat = re.sub(r"\s+", " ", text)
        for h in by_paper[paper]:
            for piece in h.wording.split("..."):
                piece = piece.strip()
                assert piece in flat, f"{h.id}: '{piece}' is not in the paper's text"
