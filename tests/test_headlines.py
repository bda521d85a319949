"""Headline claims: every relation tested on constructed per-seed values (expected p-values computed here with
scipy's t-test), the printed-number check, the validation of the data file and the shipped claims."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from bench import BenchError
from bench.claims import headlines as hl
from bench.claims.registry import load_claims, papers
from bench.verdicts import headlines as ht
from bench.verdicts import stats

SHARED_PAPERS = Path(__file__).resolve().parents[1].parent / "shared" / "papers"


def claim(relation, a=("a",), b=("b",), **kw):
    kw = {"b": b, **kw} if "value" not in kw else kw
    return hl.Headline(id="p.h1", paper="p", where="Abstract", wording="w", relation=relation, a=tuple(a), **kw)


def seeds(*values):
    return {i: v for i, v in enumerate(values)}


def run(h, per_cell, test_claims=True, method="bh"):
    return ht.judge([h], per_cell, alpha=0.05, test_claims=test_claims, why_not="smoke", method=method)[0]


def one_sided(d, mu, alternative):
    return st.ttest_1samp(d, mu, alternative=alternative).pvalue


def test_greater_holds_is_reversed_or_not_significant():
    a, b = seeds(10.0, 11.0, 12.0, 11.5), seeds(8.0, 9.0, 10.5, 9.8)
    d = [x - y for x, y in zip(a.values(), b.values())]
    o = run(claim("greater"), {"a": a, "b": b})
    assert o.test == o.verdict == "HOLDS" and o.n == 4
    assert o.p_holds == pytest.approx(one_sided(d, 0, "greater"))
    assert o.p_two_sided == o.p_adjusted == pytest.approx(2 * o.p_holds)  # one claim: two-sided, nothing to adjust
    assert o.diff == pytest.approx(sum(d) / 4)
    assert run(claim("greater"), {"a": b, "b": a}).verdict == "REVERSED"
    assert run(claim("less"), {"a": b, "b": a}).verdict == "HOLDS"
    noisy = run(claim("greater"), {"a": seeds(10.0, 8.0, 12.0), "b": seeds(9.0, 10.0, 10.5)})
    assert noisy.verdict == "NOT SIGNIFICANT"


def test_less_tests_against_zero_both_ways():
    a, b = seeds(10.0, 10.6, 11.2, 10.9), seeds(10.5, 10.9, 11.8, 11.0)
    d = [x - y for x, y in zip(a.values(), b.values())]
    o = run(claim("less"), {"a": a, "b": b})
    assert o.p_holds == pytest.approx(one_sided(d, 0.0, "less")) and o.p_reversed == pytest.approx(
        one_sided(d, 0.0, "greater")
    )
    g = run(claim("greater"), {"a": a, "b": b})
    assert g.p_holds == pytest.approx(one_sided(d, 0.0, "greater")) and g.p_reversed == pytest.approx(o.p_holds)
    m = run(claim("at_most", margin=0.5), {"a": a, "b": b})
    assert m.p_holds == pytest.approx(one_sided(d, 0.5, "less"))


def test_pairing_uses_the_seeds_both_sides_have():
    a, b = seeds(10.0, 11.0, 12.0), {1: 9.0, 2: 9.8, 5: 0.0}
    o = run(claim("greater"), {"a": a, "b": b})
    assert o.n == 2 and o.diff == pytest.approx(2.1)


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


def test_an_adjusted_p_equal_to_alpha_is_not_significant(monkeypatch):
    monkeypatch.setattr(ht.stats, "adjust", lambda ps, method: [0.05] * len(ps))
    assert (
        run(claim("greater"), {"a": seeds(10.0, 11.0, 12.0), "b": seeds(8.0, 9.0, 10.5)}).verdict == "NOT SIGNIFICANT"
    )


def test_no_margin_means_zero():
    below = {"a": seeds(89.5, 90.4, 91.6, 89.9), "b": seeds(90.0, 91.0, 92.0, 90.5)}  # A - B about -0.5
    assert claim("at_least").margin == 0.0
    assert run(claim("at_least"), below).verdict == "REVERSED"  # A >= B fails without a margin
    assert run(claim("at_least", margin=1.0), below).verdict == "HOLDS"


def test_a_constant_side():
    saving = {"a": seeds(60.0, 62.0, 61.0, 63.0)}
    assert run(claim("greater", b=(), value=50.0), saving).verdict == "HOLDS"
    assert run(claim("greater", b=(), value=70.0), saving).verdict == "REVERSED"


def test_pairwise_needs_every_pair_and_any_reversal_reverses():
    cells = {
        "a1": seeds(10.0, 11.0, 12.0, 11.0),
        "b1": seeds(8.0, 9.0, 10.0, 9.2),
        "a2": seeds(10.0, 11.0, 12.0, 11.0),
        "b2": seeds(9.0, 12.0, 10.0, 11.5),  # not significant
        "a3": seeds(5.0, 6.0, 7.0, 6.1),
        "b3": seeds(8.0, 9.0, 10.0, 9.0),
    }  # reversed
    two = claim("greater", a=("a1", "a2"), b=("b1", "b2"), pairwise=True)
    assert run(two, cells).verdict == "NOT SIGNIFICANT"  # one pair holds, the other does not: not all hold
    held = claim("greater", a=("a1", "a1"), b=("b1", "b1"), pairwise=True)
    assert run(held, cells).verdict == "HOLDS"
    rev = claim("greater", a=("a1", "a3"), b=("b1", "b3"), pairwise=True)
    assert run(rev, cells).verdict == "REVERSED"


def test_ranking_checks_adjacent_groups():
    cells = {"x": seeds(95.0, 96.0, 95.5, 95.8), "y": seeds(90.0, 91.0, 90.2, 90.9), "z": seeds(80.0, 81.0, 80.5, 80.1)}
    rank = hl.Headline(
        id="p.h2", paper="p", where="Results", wording="w", relation="ranking", items=(("x",), ("y",), ("z",))
    )
    assert [p[:2] for p in rank.pairs()] == [(("x",), ("y",)), (("y",), ("z",))]
    assert run(rank, cells).verdict == "HOLDS"
    wrong = hl.Headline(
        id="p.h3", paper="p", where="Results", wording="w", relation="ranking", items=(("x",), ("z",), ("y",))
    )
    assert run(wrong, cells).verdict == "REVERSED"
    errors = hl.Headline(
        id="p.h4",
        paper="p",
        where="Results",
        wording="w",
        relation="ranking",
        items=(("z",), ("y",), ("x",)),
        lower_is_better=True,
    )
    assert run(errors, cells).verdict == "HOLDS"


def test_exact_sides_one_seed_missing_and_not_comparable():
    exact = {"a": {None: 5.0}, "b": {None: 3.0}}
    assert run(claim("greater"), exact).verdict == "HOLDS"
    decided = run(claim("less"), exact)
    assert (decided.p_holds, decided.p_reversed, decided.n) == (1.0, 0.0, 0)  # decided without a test
    held = run(claim("greater"), exact)
    assert (held.p_holds, held.p_reversed, held.verdict) == (0.0, 1.0, "HOLDS")
    tie = run(claim("greater"), {"a": {None: 3.0}, "b": {None: 3.0}})  # neither holds nor reversed
    assert (tie.p_holds, tie.p_reversed, tie.verdict) == (1.0, 1.0, "NOT SIGNIFICANT")
    one_seed_and_missing = claim("greater", a=("a", "a2"), b=("b", "b2"), pairwise=True)
    partial = run(one_seed_and_missing, {"a": seeds(5.0), "b": seeds(3.0)})
    assert partial.verdict == "NOT SIGNIFICANT" and "1 seed" in partial.reason  # not MISSING: a pair has values
    uneven = claim("greater", a=("a", "c"), b=("b", "d"), pairwise=True)
    counts = run(
        uneven,
        {
            "a": seeds(10.0, 11.0, 12.0),
            "b": seeds(8.0, 9.0, 10.5),
            "c": seeds(10.0, 11.0, 12.0, 11.0, 10.5),
            "d": seeds(8.0, 9.0, 10.0, 9.2, 8.8),
        },
    )
    assert counts.n == 3  # the fewest seeds of a pair
    assert run(claim("less"), exact).verdict == "REVERSED"
    single = run(claim("greater"), {"a": seeds(5.0), "b": seeds(3.0)})
    assert single.verdict == "NOT SIGNIFICANT" and "1 seed" in single.reason
    missing = run(claim("greater"), {"a": seeds(5.0, 6.0)})
    assert missing.verdict == "MISSING" and "b" in missing.reason
    smoke = run(claim("greater"), {"a": seeds(10.0, 11.0, 12.0), "b": seeds(8.0, 9.0, 10.5)}, test_claims=False)
    assert smoke.verdict == "NOT COMPARABLE" and smoke.test == "HOLDS" and "smoke" in smoke.reason
    tested = run(claim("greater"), {"a": seeds(10.0, 11.0, 12.0), "b": seeds(8.0, 9.0, 10.5)})
    assert tested.reason == ""  # a profile that tests claims adds no why-not


def test_the_correction_over_the_claims_of_a_paper():
    weak = {"c": seeds(10.0, 11.0, 12.0), "d": seeds(9.0, 10.4, 11.5)}
    h = claim("greater", a=("c",), b=("d",))
    p_weak = one_sided([1.0, 0.6, 0.5], 0, "greater")
    assert 0.0125 < p_weak < 0.025
    assert run(h, weak).verdict == "HOLDS"  # alone: two-sided 2 p < 0.05
    both = ht.judge([h, h], weak, alpha=0.05, test_claims=True, method="holm")  # Holm doubles the smaller p
    assert [o.p_adjusted for o in both] == pytest.approx([4 * p_weak, 4 * p_weak])
    assert [o.verdict for o in both] == ["NOT SIGNIFICANT"] * 2
    bh = ht.judge([h, h], weak, alpha=0.05, test_claims=True, method="bh")  # BH: 2p x 2 / 2 for both
    assert [o.p_adjusted for o in bh] == pytest.approx([2 * p_weak, 2 * p_weak])
    assert [o.verdict for o in bh] == ["HOLDS"] * 2
    strong = {"a": seeds(10.0, 11.0, 12.0, 11.0), "b": seeds(8.0, 9.0, 10.0, 9.2)}
    mixed = ht.judge([claim("greater"), h], {**strong, **weak}, alpha=0.05, test_claims=True, method="holm")
    assert mixed[1].p_adjusted == pytest.approx(max(4 * mixed[0].p_holds, 2 * p_weak))  # Holm's second step: x 1


def test_a_true_difference_of_zero_rejects_at_most_alpha():
    """The claim's p is two-sided (2 x the smaller one-sided p): at A = B, HOLDS and REVERSED together come out
    at most 5 % of the time (4,000 simulated claims, each alone)."""
    rng = np.random.default_rng(11)
    decided = 0
    for _ in range(4000):
        a, b = rng.normal(50.0, 0.3, 3), rng.normal(50.0, 0.3, 3)
        decided += run(claim("greater"), {"a": seeds(*a), "b": seeds(*b)}).verdict in ("HOLDS", "REVERSED")
    assert 0.03 < decided / 4000 <= 0.06


def test_non_finite_values_never_decide_a_claim():
    nan_a = {"a": seeds(10.0, math.nan, 11.0), "b": seeds(12.0, 13.0, 12.5)}
    o = run(claim("less"), nan_a)
    assert o.verdict == "DIVERGED" and "nan" in o.reason and "a seed 1" in o.reason and o.n == 0
    assert run(claim("greater"), {"a": seeds(90.0, math.inf, 90.2), "b": seeds(80.0, 81.0, 80.5)}).verdict == "DIVERGED"
    smoke = run(claim("less"), nan_a, test_claims=False)
    assert smoke.verdict == "DIVERGED"


def test_identical_per_seed_differences_are_not_tested():
    same = {"a": seeds(10.0, 11.0, 12.0), "b": seeds(9.0, 10.0, 11.0)}  # A - B is exactly 1 for every seed
    o = run(claim("greater"), same)
    assert o.verdict == "NOT SIGNIFICANT" and "identical" in o.reason and o.n == 3 and o.diff == pytest.approx(1.0)


def test_two_seeds_are_a_test():
    o = run(claim("greater"), {"a": seeds(10.0, 11.0), "b": seeds(8.0, 9.1)})
    assert o.n == 2 and o.verdict in ("HOLDS", "NOT SIGNIFICANT") and not math.isnan(o.p_holds)
    assert o.p_holds == pytest.approx(one_sided([2.0, 1.9], 0, "greater"))


def test_partial_pairwise_claims_are_tested_on_the_pairs_run():
    held = {"a1": seeds(10.0, 11.0, 12.0, 11.0), "b1": seeds(8.0, 9.0, 10.0, 9.2)}
    rev = {"a3": seeds(5.0, 6.0, 7.0, 6.1), "b3": seeds(8.0, 9.0, 10.0, 9.0)}
    two = claim("greater", a=("a1", "a2"), b=("b1", "b2"), pairwise=True)
    o = run(two, held)  # a2/b2 were not run (only=): never a plain HOLDS
    assert o.verdict == o.test == "holds on 1 of 2 pairs (1 untested)"
    assert o.pairs == "1 of 2" and "partial" in o.reason and "a2" in o.reason
    three = claim("greater", a=("a1", "a1", "a2"), b=("b1", "b1", "b2"), pairwise=True)
    assert run(three, held).verdict == "holds on 2 of 3 pairs (1 untested)"
    assert run(three, held, test_claims=False).test == "holds on 2 of 3 pairs (1 untested)"
    assert run(three, {**held, "a2": seeds(1.0), "b2": seeds(0.0)}).verdict == "holds on 2 of 3 pairs (1 untested)"
    full = claim("greater", a=("a1", "a1"), b=("b1", "b1"), pairwise=True)
    assert run(full, held).verdict == "HOLDS" and run(full, held).pairs == ""  # every pair tested
    with_rev = claim("greater", a=("a3", "a2"), b=("b3", "b2"), pairwise=True)
    assert run(with_rev, rev).verdict == "REVERSED"  # a missing pair does not hide a reversal
    one_seed = {**rev, "a2": seeds(1.0), "b2": seeds(0.0)}
    assert run(with_rev, one_seed).verdict == "REVERSED"  # nor a pair with one seed
    nothing = run(two, {})
    assert nothing.verdict == "MISSING" and nothing.n == 0 and nothing.pairs == ""


def test_a_reversal_is_corrected_over_the_claims_pairs():
    cells = {
        "a1": seeds(9.0, 9.6, 10.1),
        "b1": seeds(10.0, 10.4, 10.6),
        "a2": seeds(9.2, 9.5, 10.3),
        "b2": seeds(10.1, 10.2, 10.9),
    }
    h = claim("greater", a=("a1", "a2"), b=("b1", "b2"), pairwise=True)
    p_rev = [one_sided([-1.0, -0.8, -0.5], 0, "less"), one_sided([-0.9, -0.7, -0.6], 0, "less")]
    assert run(h, cells).p_reversed == pytest.approx(min(stats.holm(p_rev)))
    assert min(stats.holm(p_rev)) > min(p_rev)


def test_within_the_reverse_is_twice_the_smaller_way_out():
    d_cells = {"a": seeds(90.0, 91.0, 92.5), "b": seeds(88.0, 88.5, 89.0)}
    d = [2.0, 2.5, 3.5]
    o = run(claim("within", margin=1.0), d_cells)
    expected = min(1.0, 2 * min(one_sided(d, 1.0, "greater"), one_sided(d, -1.0, "less")))
    assert o.p_reversed == pytest.approx(expected)
    assert o.p_two_sided == pytest.approx(expected)  # doubled once: "within" and its reverse partition the line
    inside = run(claim("within", margin=1.0), {"a": seeds(90.0, 90.2, 89.9, 90.1), "b": seeds(90.1, 90.0, 90.0, 90.2)})
    assert inside.verdict == "HOLDS" and inside.p_two_sided == pytest.approx(inside.p_holds)
    greater = run(claim("greater"), d_cells)  # other relations: both conclusions are wrong at A = B, so 2 x
    assert greater.p_two_sided == pytest.approx(2 * greater.p_holds)


def test_within_just_outside_its_margin_holds_about_alpha_of_the_time():
    """A true |A - B| on the margin (outside by convention, as a band's edge): a false HOLDS comes out about alpha
    of the time, not alpha / 2 as with the p doubled twice (4,000 simulated claims: Monte-Carlo sd 0.0034)."""
    rng = np.random.default_rng(13)
    held = 0
    for _ in range(4000):
        d = rng.normal(1.0, 0.1, 4)  # true A - B = 1.0 = the margin; SE 0.05, far from the other edge
        held += (
            run(claim("within", margin=1.0), {"a": seeds(*(50.0 + d)), "b": seeds(50.0, 50.0, 50.0, 50.0)}).verdict
            == "HOLDS"
        )
    assert 0.035 < held / 4000 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 4000)


def test_a_side_uses_only_the_seeds_all_its_cells_have():
    per_cell = {"x": {0: 1.0, 1: 2.0}, "y": {1: 3.0, 2: 4.0}}
    assert ht.side_values(("x", "y"), per_cell) == {1: 2.5}
    exact = {"x": {None: 2.0}, "y": {None: 4.0}, "z": {None: 5.0}}
    assert ht.side_values(("x", "y"), exact) == {None: 3.0}
    assert ht.differences(("z",), ("x",), exact) == 3.0 and ht.differences(("x",), ("z",), exact) == -3.0
    assert ht.differences(("x",), ("nothing",), exact) is None and ht.differences(("nothing",), ("x",), exact) is None
    # a side mixing an exact cell (computed from the model) with per-seed cells: the exact value joins every seed
    mixed = {"x": {0: 1.0, 1: 2.0, 2: 3.0}, "e": {None: 5.0}, "y": {1: 4.0, 2: 6.0}}
    assert ht.side_values(("x", "e"), mixed) == {0: 3.0, 1: 3.5, 2: 4.0}
    assert ht.side_values(("x", "e", "y"), mixed) == pytest.approx({1: 11 / 3, 2: 14 / 3})
    assert ht.side_values(("x", "e", "nothing"), mixed) == {}
    assert ht.differences(("x", "e"), ("e",), mixed) == [-2.0, -1.5, -1.0]
    o = run(claim("less", a=("x", "e"), b=("e", "e")), {**mixed, "x": {0: 1.0, 1: 2.0, 2: 3.1}})
    assert o.verdict == "HOLDS" and o.n == 3  # not MISSING


def test_the_relations_at_their_boundaries():
    assert hl.holds("at_most", 1.0, 1.0) and hl.holds("at_least", -1.0, 1.0) and hl.holds("within", -1.0, 1.0)
    assert hl.holds("at_most", 1.0 + hl.EPS, 1.0) and hl.holds("at_least", -1.0 - hl.EPS, 1.0)  # EPS included
    assert not hl.holds("greater", 0.0) and not hl.holds("less", 0.0)
    assert not hl.reversed_("greater", -hl.EPS) and not hl.reversed_("less", hl.EPS)  # within rounding: no reversal
    assert not hl.reversed_("at_most", 1.0, 1.0) and hl.reversed_("at_most", 1.1, 1.0)


def test_as_printed():
    printed = {"a": 10.0, "b": 9.0, "c": 40.0}
    assert hl.as_printed(claim("greater", a=("a", "c")), printed) == (True, "25 vs 9")  # a side is its cells' mean
    assert hl.as_printed(claim("less", a=("a",), b=("b", "c")), printed) == (True, "10 vs 24.5")
    three = claim("greater", a=("a", "a", "c"), b=("b", "b", "b"), pairwise=True)
    assert hl.as_printed(three, printed) == (True, "10 vs 9; 10 vs 9; 40 vs 9")  # up to three pairs: each shown
    four = claim("greater", a=("a", "a", "b", "c"), b=("b", "b", "c", "b"), pairwise=True)
    assert hl.as_printed(four, printed) == (False, "1 of 4 pairs fail: 9 vs 40")
    assert hl.as_printed(claim("greater", a=("a",) * 4, b=("b",) * 4, pairwise=True), printed) == (True, "all 4 pairs")
    four_fail = claim("greater", a=("b",) * 4 + ("a",), b=("a",) * 4 + ("b",), pairwise=True)
    assert hl.as_printed(four_fail, printed)[1] == "4 of 5 pairs fail: 9 vs 10; 9 vs 10; 9 vs 10; 9 vs 10"
    five_fail = claim("greater", a=("b",) * 5, b=("a",) * 5, pairwise=True)
    assert hl.as_printed(five_fail, printed)[1].endswith("9 vs 10; ...")
    means = hl.Headline(id="p.h9", paper="p", where="w", wording="w", relation="greater", a=("a", "c"), b=("b",))
    assert means.pairs() == [(("a", "c"), ("b",), "greater")]  # not pairwise unless it says so
    decimal = claim("within", margin=3.2)
    assert hl.as_printed(decimal, {"a": 82.65, "b": 79.45})[0]  # 3.2000000000000028 in binary is still 3.2
    assert hl.as_printed(claim("greater"), printed) == (True, "10 vs 9")
    assert hl.as_printed(claim("within", margin=0.5), printed)[0] is False
    assert hl.as_printed(claim("greater", a=("a", "c"), b=(), value=30.0, pairwise=True), printed)[0] is False


def test_malformed_headlines_are_named():
    claims = load_claims()
    acc, err = "cruciata.1.vgg-11.mnist.sgd.a", "cruciata.1.vgg-11.mnist.sgd.t"
    good = {
        "id": "cruciata.hx",
        "paper": "cruciata",
        "where": "Abstract",
        "wording": "w",
        "relation": "greater",
        "a": [acc],
        "b": ["cruciata.1.vgg-11.mnist.freezing.a"],
    }
    assert hl.parse([good], claims)[0].id == "cruciata.hx"
    two = {k: v for k, v in good.items() if k not in ("a", "b")}
    two.update(relation="ranking", items=[[acc], ["cruciata.1.vgg-11.mnist.freezing.a"]])
    assert len(hl.parse([two], claims)[0].pairs()) == 1  # two groups are a ranking
    assert hl.parse([good], claims)[0].margin == 0.0 and hl.parse([two], claims)[0].lower_is_better is False
    with pytest.raises(BenchError, match=r"at least two groups in 'items' \(and no a/b\)"):
        hl.parse([{**two, "items": [[acc]]}], claims)
    with pytest.raises(BenchError, match="is not a mapping"):
        hl.parse([5], claims)
    cases = [
        ({"a": ["no.such.cell"]}, "not in the registry"),
        ({"b": [err]}, "different metrics or units"),
        ({"relation": "bigger"}, "relation 'bigger' is not one of"),
        ({"b": [acc, acc], "pairwise": True}, "pairwise"),
        ({"value": 5}, "needs 'a' and exactly one of"),
        ({"colour": "red"}, "unknown keys"),
        ({"where": ""}, "'where'"),
        ({"b": ["ma.I.vgg8.global"]}, "belongs to paper ma, not cruciata"),
    ]
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
