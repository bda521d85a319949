"""Per-cell statistics and verdicts on constructed samples; the expected answers are computed here from the
textbook formulas (scipy's t and noncentral t distributions), not taken from bench.stats."""
import dataclasses
import math

import numpy as np
import pytest
from scipy import stats as st

from bench import stats
from bench import verdicts as vd
from bench.registry import load_claims

CLAIMS = {c.id: c for c in load_claims()}
ACC = CLAIMS["cruciata.1.vgg-11.mnist.sgd.a"]      # test accuracy, printed 98.64, higher is better
ERR = next(c for c in CLAIMS.values() if c.metric == "test_error")
TIME = CLAIMS["cruciata.1.vgg-11.mnist.sgd.t"]     # training time (min), hardware dependent
PARAMS = next(c for c in CLAIMS.values() if c.metric == "params")


def at(claim, value):
    return dataclasses.replace(claim, value=value, printed=f"{value:.2f}")


def one(claim, values, profile="paper", **kw):
    return vd.judge([vd.Cell(claim, values, **kw)], profile)[0]


def t_p(values, mu, side):
    """One-sided one-sample t-test by the formula: side 'greater' is H1 mean > mu."""
    n, m, s = len(values), np.mean(values), np.std(values, ddof=1)
    t = (m - mu) / (s / math.sqrt(n))
    return st.t.sf(t, n - 1) if side == "greater" else st.t.cdf(t, n - 1)


def test_reproduced_inside_the_tolerance_band():
    values = [90.1, 89.8, 90.3, 89.9, 90.2]
    j = one(at(ACC, 90.0), values)
    expected = max(t_p(values, 89.0, "greater"), t_p(values, 91.0, "less"))  # TOST within +-1 point
    assert j.verdict == "REPRODUCED" and j.tolerance == 1.0
    assert j.p_equivalence == pytest.approx(expected) and j.p_holm == pytest.approx(expected)  # one cell: Holm = raw
    assert j.p_ttest == pytest.approx(st.ttest_1samp(values, 90.0).pvalue)


def test_better_and_not_reproduced_follow_the_metric_direction():
    high, low = [93.0, 93.4, 92.8, 93.1], [85.0, 85.3, 84.9, 85.2]
    assert one(at(ACC, 90.0), high).verdict == "BETTER"  # accuracy above the band
    assert one(at(ACC, 90.0), low).verdict == "NOT REPRODUCED"
    assert one(at(ERR, 10.0), [7.0, 7.2, 6.9]).verdict == "BETTER"  # a lower error is better
    assert one(at(ERR, 10.0), [13.0, 13.2, 12.9]).verdict == "NOT REPRODUCED"
    j = one(at(ACC, 90.0), low)
    assert j.p_cell == pytest.approx(t_p(low, 89.0, "less"))


def test_inconclusive_with_the_seeds_that_would_settle_it():
    values = [88.0, 91.5, 89.0]  # mean 89.5 inside the band, but the spread is wide
    j = one(at(ACC, 90.0), values)
    assert j.verdict == "INCONCLUSIVE"
    n_needed = int(j.seeds_needed)
    sd, mean = np.std(values, ddof=1), np.mean(values)

    def tost_power(n):  # product of the two one-sided powers at the observed mean and spread, alpha 0.05 (one cell)
        crit = st.t.isf(0.05, n - 1)
        return (st.nct.sf(crit, n - 1, (mean - 89.0) * math.sqrt(n) / sd)
                * st.nct.sf(crit, n - 1, (91.0 - mean) * math.sqrt(n) / sd))

    assert tost_power(n_needed) >= 0.8 > tost_power(n_needed - 1)


def test_a_mean_on_the_boundary_cannot_be_settled():
    j = one(at(ACC, 90.0), [88.0, 90.0, 89.0])  # mean exactly claimed - tolerance
    assert j.verdict == "INCONCLUSIVE" and j.seeds_needed.startswith("no number of seeds")


def test_one_seed_is_inconclusive():
    j = one(at(ACC, 90.0), [90.0])
    assert j.verdict == "INCONCLUSIVE" and j.seeds_needed == "at least 3" and "one seed" in j.reason


def test_not_comparable_profiles_and_hardware():
    values = [90.0, 90.1, 89.9]
    smoke = one(at(ACC, 90.0), values, profile="smoke")
    assert smoke.verdict == "NOT COMPARABLE" and "smoke" in smoke.reason
    assert one(at(ACC, 90.0), values, profile="scaled").verdict == "NOT COMPARABLE"
    other = one(at(TIME, 20.0), [20.0, 20.1, 19.9], devices={"NVIDIA H100 80GB HBM3"})
    assert other.verdict == "NOT COMPARABLE" and "RTX 3090" in other.reason  # the paper's hardware is named
    same = one(at(TIME, 20.0), [20.0, 20.1, 19.9], devices={"NVIDIA GeForce RTX 3090"})
    assert same.verdict == "REPRODUCED" and same.tolerance == pytest.approx(2.0)  # 10 % of 20 min


def test_missing_failed_diverged_keep_their_reason():
    for status in ("MISSING", "FAILED", "DIVERGED"):
        j = one(ACC, [90.0, 91.0] if status == "FAILED" else [], status=status, reason=f"why {status}")
        assert (j.verdict, j.reason) == (status, f"why {status}")  # survivors of a failed cell are not judged


def test_exact_cells_round_to_the_printed_value_in_every_profile():
    claim = dataclasses.replace(PARAMS, printed="896", value=896.0)
    for profile in ("smoke", "paper"):
        assert one(claim, [896.0], profile=profile, exact=True).verdict == "REPRODUCED"
        assert one(claim, [9248.0], profile=profile, exact=True).verdict == "NOT REPRODUCED"


def test_holm_against_a_hand_worked_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> monotone 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_holm_runs_over_the_cells_of_a_paper():
    """A cell significant alone becomes INCONCLUSIVE among many cells whose tests are not."""
    values = [90.5, 90.7, 90.3]  # inside the band, near its edge: raw TOST p 0.025
    alone = one(at(ACC, 90.0), values)
    raw = max(t_p(values, 89.0, "greater"), t_p(values, 91.0, "less"))
    assert 0.01 < raw < 0.05 and alone.verdict == "REPRODUCED"
    noise = [88.0, 92.0, 90.0]
    together = vd.judge([vd.Cell(at(ACC, 90.0), values)] + [vd.Cell(at(ACC, 90.0), noise)] * 3, "paper")
    assert together[0].p_holm == pytest.approx(min(1.0, 4 * raw)) and together[0].verdict == "INCONCLUSIVE"


def test_intervals_t_below_ten_seeds_bca_from_ten():
    small = stats.summarize([1.0, 2.0, 3.0], bca_min_n=10)
    assert small["ci_method"] == "t"
    assert small["ci_high"] == pytest.approx(2.0 + st.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))
    values = [90.0 + 0.1 * ((7 * i) % 11) for i in range(12)]
    big = stats.summarize(values, bca_min_n=10, seed=0)
    expected = st.bootstrap((np.array(values),), np.mean, method="BCa", n_resamples=9999,
                            rng=np.random.default_rng(0)).confidence_interval
    assert big["ci_method"] == "BCa"
    assert (big["ci_low"], big["ci_high"]) == pytest.approx((expected.low, expected.high))
    assert stats.summarize(values, bca_min_n=10, seed=0) == big  # seeded: byte-stable reports


def test_tolerances_file_gives_every_metric_a_reasoned_tolerance():
    tol = vd.tolerances()
    from bench.registry import METRIC_UNITS
    from bench import experiments as ex

    assert set(tol["metrics"]) == set(METRIC_UNITS)
    for metric, spec in tol["metrics"].items():
        assert len(spec.get("why", "")) > 20, metric
        assert sum(k in spec for k in ("points", "relative", "exact")) == 1, metric
    assert set(tol["profiles"]) == set(ex.profiles())
    assert tol["profiles"]["paper"]["comparable"] and not tol["profiles"]["smoke"]["comparable"]
