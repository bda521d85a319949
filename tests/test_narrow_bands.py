"""The per-cell p-value at every band width: a band narrow against the standard error (large seed spread, small
printed-precision band) is where "the smallest of three p-values" broke, since inside the band both ways out are
wrong. Simulated draws are judged by the verdict code's own vectorised tests (bench.verdicts.cells.band_tests and
decide, which `judge` calls for every cell; checked here on the same draws). Seeded: each rate is a fixed number; the
bounds are alpha plus three simulation standard errors."""

import math

import numpy as np
import pytest

from bench.verdicts import cells as vd
from bench.verdicts import power, stats

ALPHA = vd.tolerances()["alpha"]
SEEDS = 3
DRAWS = 20_000
BOUND = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / DRAWS)  # alpha + 3 simulation SEs (0.0546 at 0.05)


def rule(mean, sd, n, low, high):
    """Today's rule: min(p inside, 2 x min(p above, p below))."""
    return vd.decide(vd.band_tests(mean, sd, n, low, high))


def old_rule(mean, sd, n, low, high):
    """The rule before: the smallest of the three raw p-values (the ways out undoubled)."""
    t = vd.band_tests(mean, sd, n, low, high)
    return vd.decide({"inside": t["inside"], "above": t["above"] / 2, "below": t["below"] / 2})


def true_side(mu, low, high):
    return np.where((low < mu) & (mu < high), "inside", np.where(mu >= high, "above", "below"))


def draws(mu, sd=1.0, n=SEEDS, size=DRAWS, seed=0):
    x = np.random.default_rng(seed).normal(mu, sd, (size, n))
    return x.mean(axis=1), x.std(axis=1, ddof=1)


def wrong_rate(decide_with, half, mu, sd=1.0, seed=0):
    """One cell alone (a family of one: its level is alpha itself), band (-half, half), true mean mu: the share of
    draws with a wrong verdict (significant at alpha, on a side where the true mean is not)."""
    mean, s = draws(mu, sd, seed=seed)
    side, p = decide_with(mean, s, SEEDS, -half, half)
    return float(np.mean((p < ALPHA) & (side != true_side(np.float64(mu), -half, half))))


@pytest.mark.parametrize("half_over_sd", [1e-6, 0.05, 0.1, 0.15, 0.2, 0.25])
@pytest.mark.parametrize("where", ["centre", "just inside"])
def test_one_cell_is_wrong_at_most_alpha_in_a_narrow_band(half_over_sd, where):
    """3 seeds, half-width ~0 to 0.25 sd (half-width / SE 0 to 0.43), the true mean at the band's centre or just
    inside its upper edge."""
    mu = 0.0 if where == "centre" else half_over_sd * (1 - 1e-6)
    assert wrong_rate(rule, half_over_sd, mu) <= BOUND


def test_the_old_rule_fails_those_bounds():
    """The test can fail: the smallest of the three raw p-values is wrong 0.087-0.099 of the time at half-width ~0
    (centre), 0.076 at 0.1 sd, and 0.06 just inside the edge at 0.25 sd (the issue's figures: 0.099, 0.076, 0.061)."""
    assert wrong_rate(old_rule, 1e-6, 0.0) > 0.09
    assert wrong_rate(old_rule, 0.1, 0.0) > BOUND
    assert wrong_rate(old_rule, 0.25, 0.25 * (1 - 1e-6)) > BOUND


@pytest.mark.parametrize("half_over_se", [0.5, 1.0, 2.0, 4.0, 7.0])
@pytest.mark.parametrize("where", ["centre", "just inside", "on the edge", "just outside"])
def test_one_cell_is_wrong_at_most_alpha_at_every_width_and_true_mean(half_over_se, where):
    """Half-width / SE from 0.5 to 7 (the existing edge test's 7), the true mean at the centre, just inside the
    upper edge, on it (outside by convention) and just beyond it."""
    half = half_over_se / math.sqrt(SEEDS)  # sd 1
    mu = {"centre": 0.0, "just inside": half - 1e-9, "on the edge": half, "just outside": half + 1e-9}[where]
    assert wrong_rate(rule, half, mu, seed=int(10 * half_over_se)) <= BOUND


def test_judge_gives_the_vectorised_rules_verdicts():
    """`judge` on single cells with a narrow band (Ma's first cell, band +-1.5 points, seed sd 8) reaches the
    verdict and p that the vectorised rule gives on the same seeds: the simulations above test the real rule."""
    claim = power.paper_cells("ma")[0]
    low, high = vd.band(claim)
    x = np.random.default_rng(5).normal(claim.value, 8.0, (300, SEEDS))
    side, p = rule(x.mean(axis=1), x.std(axis=1, ddof=1), SEEDS, low, high)
    verdicts = {"inside": "REPRODUCED", "above": "BETTER", "below": "NOT REPRODUCED"}
    decided = 0
    for row, s, q in zip(x, side, p):
        j = vd.judge([vd.Cell(claim, list(row))], "paper", with_seeds_needed=False)[0]
        assert j.p_cell == pytest.approx(q, rel=1e-9, abs=1e-15)
        assert j.verdict == (verdicts[s] if q < ALPHA else "INCONCLUSIVE")
        decided += q < ALPHA
    assert 0 < decided < 60  # some draws are decided (wrongly: the true mean is inside), about alpha of them


def bh_decided(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg's decisions row by row (p-values of one family per row): p_i is decided when some k has
    p_(k) x m / k < alpha and p_i <= p_(k) -- bench.verdicts.stats.adjust(..., "bh") < alpha, vectorised (checked
    against it in fdr_over_ma)."""
    m = p.shape[1]
    ordered = np.sort(p, axis=1)
    passes = ordered * m / np.arange(1, m + 1) < ALPHA
    last = m - 1 - np.argmax(passes[:, ::-1], axis=1)  # the largest k that passes (meaningless where none does)
    cut = np.where(passes.any(axis=1), ordered[np.arange(len(p)), last], -np.inf)
    return p <= cut[:, None]


def fdr_over_ma(decide_with, sd: float, replicates: int = 4000, seed: int = 3) -> tuple[float, float]:
    """Ma et al.'s 122 accuracy cells, every true mean at its printed value (the band's centre), seed spread sd:
    bands of 1-1.5 points are narrow against sd / sqrt(3). Benjamini-Hochberg over the 122 cells per replicate:
    the mean share of wrong verdicts among the decided, and its simulation SE."""
    claims = power.paper_cells("ma")
    bands = np.array([vd.band(c) for c in claims])
    mu = np.array([c.value for c in claims])
    x = np.random.default_rng(seed).normal(mu[None, :, None], sd, (replicates, len(claims), SEEDS))
    side, p = decide_with(x.mean(axis=2), x.std(axis=2, ddof=1), SEEDS, bands[:, 0], bands[:, 1])
    decided = bh_decided(p)
    for row, ps in zip(decided[:150], p[:150]):  # the suite's own correction agrees
        assert (row == (np.array(stats.adjust(list(ps), "bh")) < ALPHA)).all()
    wrong = decided & (side != true_side(mu, bands[:, 0], bands[:, 1]))
    shares = wrong.sum(axis=1) / np.maximum(decided.sum(axis=1), 1)
    return float(np.mean(shares)), float(np.std(shares, ddof=1) / math.sqrt(replicates))


@pytest.mark.parametrize("sd", [8.0, 30.0])
def test_benjamini_hochberg_over_122_narrow_band_cells_keeps_the_false_discovery_rate(sd):
    fdr, se = fdr_over_ma(rule, sd)
    assert fdr <= ALPHA + 3 * max(se, math.sqrt(ALPHA * (1 - ALPHA) / 4000)), (fdr, se)
    if sd == 30.0:  # bands of +-1.5 at sd 30: the old rule's rate was 0.09, as the issue measured
        old, old_se = fdr_over_ma(old_rule, sd)
        assert old > ALPHA + 3 * old_se, (old, old_se)


def test_a_cell_outside_a_narrow_band_is_still_found():
    """The price of the doubling is small: a true mean 2 sd below a narrow band at 10 seeds is still NOT
    REPRODUCED most of the time."""
    mean, s = draws(-2.0, n=10)
    side, p = rule(mean, s, 10, -0.1, 0.1)
    assert np.mean((p < ALPHA) & (side == "below")) > 0.95


def test_the_rule_at_its_limits():
    t = vd.band_tests(0.0, 1.0, 3, 0.0, 0.0)  # a band of width zero: never inside
    assert t["inside"] >= 0.5 and t["above"] == pytest.approx(1.0) and t["below"] == pytest.approx(1.0)
    side, p = rule(np.array([5.0, -5.0, 0.0]), np.array([0.1, 0.1, 0.1]), 3, -1.0, 1.0)
    assert list(side) == ["above", "below", "inside"] and (p < 0.01).all()
