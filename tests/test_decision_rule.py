"""The decision rule as a reviewer would try it: a whole paper's worth of simulated cells at the `paper` profile's
seed count (no training), judged by the real verdict code; TOST's exact power against simulation; the interval's
coverage. Seeded, so each rate is a fixed number; the bounds leave room for Monte-Carlo error only where said."""
import dataclasses
import math

import numpy as np
import pytest
from scipy import stats as st

from bench import experiments as ex
from bench.verdicts import cells as vd
from bench.verdicts import power
from bench.verdicts import stats

PAPER_SEEDS = ex.profiles()["paper"]["seeds"]
ALPHA = vd.tolerances()["alpha"]


def test_the_paper_profile_seed_count_decides_a_paper_at_realistic_spread():
    r = power.simulate(PAPER_SEEDS, 0.25, replicates=150)
    assert r["cells"] >= 100  # a whole paper (Ma et al.'s accuracies)
    assert r["p_reproduced_at"] >= 0.8, r        # a cell at its printed value comes out REPRODUCED
    assert r["p_not_reproduced_worse"] >= 0.8, r  # a cell 2 points worse comes out NOT REPRODUCED
    assert r["wrong_share"] <= ALPHA, r           # the false discovery rate the rule promises


@pytest.mark.parametrize("sd", [0.1, 0.5])
def test_the_false_discovery_rate_holds_at_every_spread(sd):
    r = power.simulate(PAPER_SEEDS, sd, replicates=100, rng_seed=1)
    assert r["wrong_share"] <= ALPHA, r


def test_holm_keeps_the_family_wise_rate_and_bh_does_not_promise_it():
    holm = power.simulate(PAPER_SEEDS, 0.25, replicates=100, correction="holm")
    assert holm["any_wrong"] <= ALPHA + 0.03, holm  # 100 replicates: about +-0.02 of Monte-Carlo error
    assert holm["p_reproduced_at"] < 0.5  # and at 3 seeds it can hardly decide a paper: why BH is the default


def _alone_at(offset_from_edge: float, draws: int = 4000, sd: float = 0.25) -> dict:
    """One cell judged alone (a family of one: its level is alpha itself, the hardest case) `draws` times, with its
    true mean at the band's upper edge plus an offset: the share of each verdict."""
    from collections import Counter

    claim = power.paper_cells("ma")[0]
    _, high = vd.band(claim)
    rng = np.random.default_rng(7)
    counts = Counter(vd.judge([vd.Cell(claim, list(rng.normal(high + offset_from_edge, sd, PAPER_SEEDS)))], "paper",
                              with_seeds_needed=False)[0].verdict for _ in range(draws))
    return {k: v / draws for k, v in counts.items()}


def test_wrong_verdicts_on_and_next_to_the_band_edge_stay_below_alpha():
    """The three conclusions partition the line, an edge counting as outside: at every true mean the wrong ones
    together happen at most alpha of the time (4,000 draws: Monte-Carlo sd 0.0034)."""
    on_edge = _alone_at(0.0)          # outside by convention: REPRODUCED is the wrong verdict
    assert 0.02 < on_edge.get("REPRODUCED", 0) <= ALPHA + 0.01, on_edge
    just_inside = _alone_at(-1e-6)    # inside: BETTER (and NOT REPRODUCED) are wrong
    assert 0.02 < just_inside.get("BETTER", 0) + just_inside.get("NOT REPRODUCED", 0) <= ALPHA + 0.01, just_inside


@pytest.mark.parametrize("low_effect,high_effect,sd,n,alpha", [
    (1.0, 1.0, 1.8, 10, 0.05), (1.0, 1.0, 0.25, 3, 0.05), (0.5, 1.5, 0.5, 5, 0.01), (1.0, 1.0, 1.0, 2, 0.05),
    (0.2, 0.2, 0.1, 4, 0.0125)])
def test_exact_tost_power_matches_simulation(low_effect, high_effect, sd, n, alpha):
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, sd, (200_000, n))
    m, s = x.mean(axis=1), x.std(axis=1, ddof=1)
    se, c = s / math.sqrt(n), st.t.isf(alpha, n - 1)
    simulated = np.mean(((m + low_effect) / se > c) & ((high_effect - m) / se > c))
    assert stats.power_tost(low_effect, high_effect, sd, n, alpha) == pytest.approx(simulated, abs=0.005)


def test_tost_power_is_not_the_product_of_the_one_sided_powers():
    exact = stats.power_tost(1.0, 1.0, 1.8, 10, 0.05)
    assert exact == pytest.approx(0.12, abs=0.01)
    product = stats.power_one_sided(1.0, 1.8, 10, 0.05) ** 2
    assert product == pytest.approx(0.24, abs=0.01)


def test_one_sided_power_by_formula():
    for effect, sd, n, alpha in [(0.5, 1.0, 5, 0.05), (1.0, 0.3, 3, 0.0125), (0.2, 0.5, 20, 0.001)]:
        expected = st.nct.sf(st.t.isf(alpha, n - 1), n - 1, effect * math.sqrt(n) / sd)
        assert stats.power_one_sided(effect, sd, n, alpha) == pytest.approx(expected, rel=1e-12)
    assert stats.power_one_sided(5.0, 0.1, 2, 0.05) > 0.99   # two seeds can be enough
    assert stats.power_one_sided(5.0, 0.1, 1, 0.05) == 0.0   # one seed has no test
    assert stats.power_tost(1.0, 1.0, 0.0, 5, 0.05) == 0.0   # no spread: no power computed from it
    assert stats.power_tost(1.0, 1.0, 1.0, 1, 0.05) == 0.0


def test_seeds_needed_search():
    assert stats.seeds_needed(lambda n: 1.0, 0.8) == 2      # two seeds can be enough
    assert stats.seeds_needed(lambda n: n >= 37, 0.8) == 37
    assert stats.seeds_needed(lambda n: n >= 5000, 0.8) == 5000
    assert stats.seeds_needed(lambda n: 0.0, 0.8) is None
    assert stats.seeds_needed(lambda n: n >= 10_000, 0.8) == 10_000
    assert stats.seeds_needed(lambda n: 0.8 if n >= 5 else 0.0, 0.8) == 5  # reaching the power exactly is enough
    assert stats.seeds_needed(lambda n: 0.8 if n >= 37 else 0.0, 0.8) == 37  # also inside the bisection
    asked = []
    assert stats.seeds_needed(lambda n: asked.append(n) or n >= 37, 0.8) == 37
    assert max(asked) <= 2 * 37 and len(asked) <= 14  # doubling, then bisection: never near the 10,000 limit


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_the_interval_covers_what_it_says(n):
    """The 95 % interval of cells.csv (bench.verdicts.stats.summarize) at the seed counts the profiles use."""
    rng = np.random.default_rng(n)
    hits = 0
    for _ in range(4000):
        s = stats.summarize(list(rng.normal(80.0, 0.3, n)))
        hits += s["ci_low"] < 80.0 < s["ci_high"]
    assert hits / 4000 == pytest.approx(0.95, abs=0.012)  # 4,000 draws: Monte-Carlo sd 0.0034


def test_power_table_command_output(capsys):
    from bench.cli import main

    assert main(["power", "--seeds", "3", "--sd", "0.25", "--replicates", "5"]) == 0
    out = capsys.readouterr().out
    assert "| 3 " in out and "FDR" in out and "correction bh" in out
    assert main(["power", "--seeds", "1"]) == 2
    assert main(["power", "--sd", "-1"]) == 2


def test_the_truth_partition():
    assert power.truth(1.0, 0.0, 2.0, True) == "REPRODUCED"
    assert power.truth(2.0, 0.0, 2.0, True) == "BETTER"       # the edge counts as outside
    assert power.truth(0.0, 0.0, 2.0, True) == "NOT REPRODUCED"
    assert power.truth(2.0, 0.0, 2.0, False) == "NOT REPRODUCED"
    assert power.truth(5.0, 0.0, 2.0, None) == "NOT REPRODUCED"


def test_the_simulated_paper_uses_the_registry_bands():
    claims = power.paper_cells("ma")
    assert all(c.metric == "test_accuracy" and not c.derived_from for c in claims)
    assert len({vd.band(c) for c in claims}) > 10  # one band per printed value, not one band for all
    with pytest.raises(ValueError):
        power.paper_cells("nope")
    assert dataclasses.is_dataclass(claims[0])
