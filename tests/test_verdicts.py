"""Per-cell statistics, bands and verdicts on constructed samples; the expected answers are computed here from the
textbook formulas (scipy's t and noncentral t distributions, a grid integration of TOST's power), not taken from
bench.verdicts.stats."""

import copy
import dataclasses
import math
import re

import numpy as np
import pytest
from scipy import stats as st

from bench.claims.registry import load_claims
from bench.verdicts import cells as vd
from bench.verdicts import stats

CLAIMS = {c.id: c for c in load_claims()}
ACC = CLAIMS["cruciata.1.vgg-11.mnist.sgd.a"]  # test accuracy, printed 98.64, higher is better
ERR = next(c for c in CLAIMS.values() if c.metric == "test_error")
TIME = CLAIMS["cruciata.1.vgg-11.mnist.sgd.t"]  # training time (min), hardware dependent
SAVING = CLAIMS["cruciata.2.resnet-50.mnist.freezing.dt"]  # time saving, printed 1.16 %
DBPEDIA = CLAIMS["karimi.8.dbpedia.proposed-method.vd-cnn-depth-29"]  # test error, printed 1.23 %
PARAMS = next(c for c in CLAIMS.values() if c.metric == "params")
FLOPS = next(c for c in CLAIMS.values() if c.metric == "flops")
HALF = 0.005  # half a unit of the last digit of a value printed with two decimals


def at(claim, value, printed=None):
    return dataclasses.replace(claim, value=value, printed=printed or f"{value:.2f}")


def one(claim, values, profile="paper", **kw):
    return vd.judge([vd.Cell(claim, values, **kw)], profile)[0]


def needed(j) -> tuple[int, int, int]:
    """(seeds needed, fewest, most) from a judgement's "N (range A-B over the sd's 80 % interval)"."""
    m = re.fullmatch(r"([\d,]+) \(range ([\d,]+)-([\d,]+) over the sd's 80 % interval\)", j.seeds_needed)
    assert m, j.seeds_needed
    return tuple(int(g.replace(",", "")) for g in m.groups())


def sd_range(values, confidence=0.8):
    """The sd's two-sided interval by the textbook formula: (n - 1) s^2 / sd^2 is chi-square on n - 1."""
    n, s = len(values), np.std(values, ddof=1)
    return (
        s * math.sqrt((n - 1) / st.chi2.ppf(0.5 + confidence / 2, n - 1)),
        s * math.sqrt((n - 1) / st.chi2.ppf(0.5 - confidence / 2, n - 1)),
    )


def smallest(power, target=0.8):
    """The smallest n >= 2 with power(n) >= target, by counting up (power grows with n)."""
    n = 2
    while power(n) < target:
        n += 1
    return n


def t_p(values, mu, side):
    """One-sided one-sample t-test by the formula: side 'greater' is H1 mean > mu."""
    n, m, s = len(values), np.mean(values), np.std(values, ddof=1)
    t = (m - mu) / (s / math.sqrt(n))
    return st.t.sf(t, n - 1) if side == "greater" else st.t.cdf(t, n - 1)


def tost_power_by_grid(low_effect, high_effect, sd, n, alpha, points=20001):
    """TOST's power by brute force: the sample sd's density (chi distribution) on a fine grid, the mean's normal
    probability of landing in the rejection interval at each sd, trapezoid rule."""
    df = n - 1
    c = st.t.isf(alpha, df)
    s = np.linspace(1e-9, sd * 8, points)
    dens = st.chi.pdf(s / sd * math.sqrt(df), df) * math.sqrt(df) / sd
    se = sd / math.sqrt(n)
    upper = (high_effect - c * s / math.sqrt(n)) / se
    lower = (-low_effect + c * s / math.sqrt(n)) / se
    prob = np.clip(st.norm.cdf(upper) - st.norm.cdf(lower), 0, None)
    return float(np.trapezoid(prob * dens, s))


# ---------------------------------------------------------------- bands


def test_bands_scale_with_small_values_and_carry_the_printed_precision():
    assert vd.band(at(ACC, 90.0)) == pytest.approx((90 - 1 - HALF, 90 + 1 + HALF))  # the point rules
    assert vd.band(at(ACC, 99.4)) == pytest.approx((99.4 - 0.3 - HALF, 99.4 + 0.3 + HALF))  # half the 0.6 % error
    assert vd.band(at(ACC, 80.0, printed="80")) == pytest.approx((78.5, 81.5))  # "80" stands for 79.5-80.5
    assert vd.band(at(ACC, 80.0, printed="80.0")) == pytest.approx((78.95, 81.05))
    assert vd.band(DBPEDIA) == pytest.approx((1.23 - 0.615 - HALF, 1.23 + 0.615 + HALF))
    assert vd.band(at(ERR, 10.0)) == pytest.approx((9 - HALF, 11 + HALF))
    assert vd.band(SAVING) == pytest.approx((1.16 - 0.58 - HALF, 1.16 + 0.58 + HALF))
    assert vd.band(at(SAVING, 65.0)) == pytest.approx((60 - HALF, 70 + HALF))
    assert vd.band(at(TIME, 20.0)) == pytest.approx((18 - HALF, 22 + HALF))  # 10 % of 20 min
    assert vd.band(dataclasses.replace(PARAMS, value=896.0, printed="896")) == (896.0, 896.0)


def test_a_printed_zero_keeps_a_symmetric_band():
    assert vd.band(at(SAVING, 0.0)) == pytest.approx((-HALF, HALF))  # no direction to keep


def test_the_band_rules_in_words():
    assert vd.describe_band("test_accuracy") == "±1 point, at most 50 % of the printed error (100 − value)"
    assert vd.describe_band("time_saving_pct") == "±5 points, at most 50 % of the printed value, never crossing zero"
    assert vd.describe_band("train_time") == "±10 % of the printed value"
    assert vd.describe_band("params") == "exact"


def test_a_band_never_crosses_zero_for_a_metric_that_keeps_its_sign(monkeypatch):
    wide = copy.deepcopy(vd.tolerances())
    del wide["metrics"]["time_saving_pct"]["relative"]  # 5 points alone would reach -3.8 around 1.16
    monkeypatch.setattr(vd, "tolerances", lambda: wide)
    assert vd.band(SAVING) == pytest.approx((0.0, 1.16 + 5 + HALF))
    assert vd.band(at(SAVING, -1.16)) == pytest.approx((-1.16 - 5 - HALF, 0.0))
    wide["metrics"]["time_saving_pct"]["keeps_sign"] = False
    assert vd.band(SAVING)[0] == pytest.approx(1.16 - 5 - HALF)


def test_bands_that_cannot_hide_a_reversal_or_a_doubling():
    slower = one(SAVING, [-3.1, -2.9, -3.0, -3.05])  # Freezing 3 % slower than SGD
    assert slower.verdict == "NOT REPRODUCED"
    more_errors = one(DBPEDIA, [2.1, 2.12, 2.08])  # 70 % more errors than the printed 1.23 %
    assert more_errors.verdict == "NOT REPRODUCED"
    assert one(DBPEDIA, [1.22, 1.25, 1.24]).verdict == "REPRODUCED"


# ---------------------------------------------------------------- verdicts


def test_reproduced_inside_the_band():
    values = [90.1, 89.8, 90.3, 89.9, 90.2]
    j = one(at(ACC, 90.0), values)
    expected = max(t_p(values, 89.0 - HALF, "greater"), t_p(values, 91.0 + HALF, "less"))  # TOST
    assert j.verdict == "REPRODUCED" and (j.band_low, j.band_high) == pytest.approx((88.995, 91.005))
    assert j.p_equivalence == pytest.approx(expected) and j.p_adjusted == pytest.approx(expected)  # one cell
    assert j.p_ttest == pytest.approx(st.ttest_1samp(values, 90.0).pvalue)


def test_better_and_not_reproduced_follow_the_metric_direction():
    high, low = [93.0, 93.4, 92.8, 93.1], [85.0, 85.3, 84.9, 85.2]
    assert one(at(ACC, 90.0), high).verdict == "BETTER"  # accuracy above the band
    assert one(at(ACC, 90.0), low).verdict == "NOT REPRODUCED"
    assert one(at(ERR, 10.0), [7.0, 7.2, 6.9]).verdict == "BETTER"  # a lower error is better
    assert one(at(ERR, 10.0), [13.0, 13.2, 12.9]).verdict == "NOT REPRODUCED"
    j = one(at(ACC, 90.0), low)
    assert j.p_cell == pytest.approx(2 * t_p(low, 89.0 - HALF, "less"))  # a way out is tested at half the level
    j = one(at(ACC, 90.0), high)
    assert j.p_cell == pytest.approx(2 * t_p(high, 91.0 + HALF, "greater"))


def test_inconclusive_with_the_seeds_exact_tost_power_needs():
    values = [88.0, 91.5, 89.0]  # mean 89.5 inside the band, but the spread is wide
    j = one(at(ACC, 90.0), values)
    assert j.verdict == "INCONCLUSIVE"
    n_needed, fewest, most = needed(j)
    sd, mean = np.std(values, ddof=1), np.mean(values)
    low, high = 90.0 - 1 - HALF, 90.0 + 1 + HALF  # effects from the band's edges, not from the printed value
    power = lambda n, s=sd: tost_power_by_grid(mean - low, high - mean, s, n, 0.05)  # noqa: E731 (one cell: alpha)
    assert power(n_needed) >= 0.8 > power(n_needed - 1)
    # the range: the seeds needed at the ends of the sd's 80 % interval (3 seeds: 0.66 to 3.1 times the sd)
    sd_low, sd_high = sd_range(values)
    assert power(fewest, sd_low) >= 0.8 > power(fewest - 1, sd_low) and fewest < n_needed
    assert power(most, sd_high) >= 0.8 > power(most - 1, sd_high) and most > 3 * n_needed
    mirrored = [180.0 - v for v in values]  # mean 90.5: now the upper edge is the near one
    j = one(at(ACC, 90.0), mirrored)
    assert j.verdict == "INCONCLUSIVE" and needed(j) == (n_needed, fewest, most)
    power = lambda n: tost_power_by_grid(90.5 - low, high - 90.5, sd, n, 0.05)  # noqa: E731
    assert power(n_needed) >= 0.8 > power(n_needed - 1)


def test_seeds_needed_uses_the_level_the_correction_reached():
    noisy = [88.0, 91.5, 89.0]
    four = vd.judge([vd.Cell(at(ACC, 90.0), noisy)] * 4, "paper")  # nothing rejected: BH's level is alpha / 4
    sd, mean = np.std(noisy, ddof=1), np.mean(noisy)
    n_needed = needed(four[0])[0]
    power = lambda n: tost_power_by_grid(mean - 88.995, 91.005 - mean, sd, n, 0.05 / 4)  # noqa: E731
    assert power(n_needed) >= 0.8 > power(n_needed - 1)
    assert n_needed > needed(one(at(ACC, 90.0), noisy))[0]
    # two cells decided among four: BH's level is alpha * 2 / 4
    clear = [90.0, 90.1, 89.9, 90.05]
    mixed = vd.judge([vd.Cell(at(ACC, 90.0), clear)] * 2 + [vd.Cell(at(ACC, 90.0), noisy)] * 2, "paper")
    assert [m.verdict for m in mixed] == ["REPRODUCED"] * 2 + ["INCONCLUSIVE"] * 2
    power = lambda n: tost_power_by_grid(mean - 88.995, 91.005 - mean, sd, n, 0.05 * 2 / 4)  # noqa: E731
    assert power(needed(mixed[2])[0]) >= 0.8 > power(needed(mixed[2])[0] - 1)


def test_outside_the_band_seeds_needed_is_the_one_sided_power():
    values = [87.5, 89.5, 88.1]  # mean 88.37, below the band, wide spread
    j = one(at(ACC, 90.0), values)
    assert j.verdict == "INCONCLUSIVE"
    sd, mean = np.std(values, ddof=1), np.mean(values)
    # a way out is tested at half the level (both ways out are wrong inside the band)
    power = lambda n, s=sd: st.nct.sf(st.t.isf(0.025, n - 1), n - 1, (88.995 - mean) * math.sqrt(n) / s)  # noqa: E731
    n_needed, fewest, most = needed(j)
    assert power(n_needed) >= 0.8 > power(n_needed - 1)
    sd_low, sd_high = sd_range(values)
    assert (fewest, most) == (smallest(lambda n: power(n, sd_low)), smallest(lambda n: power(n, sd_high)))


def test_above_the_band_seeds_needed_is_the_one_sided_power():
    values = [91.5, 93.5, 92.1]  # mean 92.37, above the band, wide spread
    j = one(at(ACC, 90.0), values)
    assert j.verdict == "INCONCLUSIVE"
    sd, mean = np.std(values, ddof=1), np.mean(values)
    power = lambda n: st.nct.sf(st.t.isf(0.025, n - 1), n - 1, (mean - 91.005) * math.sqrt(n) / sd)  # noqa: E731
    assert power(needed(j)[0]) >= 0.8 > power(needed(j)[0] - 1)


def test_an_adjusted_p_equal_to_alpha_is_not_significant(monkeypatch):
    monkeypatch.setattr(vd.stats, "adjust", lambda ps, method: [0.05] * len(ps))
    assert one(at(ACC, 90.0), [90.0, 90.1, 89.9, 90.05]).verdict == "INCONCLUSIVE"


def test_a_mean_on_the_band_edge_cannot_be_settled():
    assert vd.seeds_needed([0.0, 1.0, 2.0], 1.0, 3.0, 0.05, 0.8).startswith("no number of seeds")
    assert vd.seeds_needed([2.0, 3.0, 4.0], 1.0, 3.0, 0.05, 0.8).startswith("no number of seeds")


def test_one_seed_is_inconclusive():
    j = one(at(ACC, 90.0), [90.0])
    assert j.verdict == "INCONCLUSIVE" and j.seeds_needed == "at least 3" and "one seed" in j.reason


def test_non_finite_values_never_get_a_verdict():
    for values in ([90.0, math.nan, 90.2], [50.0, math.inf, 50.2], [-math.inf, 90.0, 90.1]):
        j = one(at(ACC, 90.0), values)
        assert j.verdict == "DIVERGED" and "not finite" in j.reason, values
    assert one(at(ACC, 50.0), [50.0, math.inf, 50.2]).verdict == "DIVERGED"
    for fn in (stats.mean_sd, lambda v: stats.p_greater(v, 0.0), lambda v: stats.tost(v, -1, 1)):
        with pytest.raises(ValueError, match="non-finite"):
            fn([1.0, math.nan, 2.0])
    assert math.isnan(stats.summarize([1.0, math.nan])["mean"])


def test_identical_seeds_from_identical_runs_are_flagged_not_decided_by_the_last_bit():
    ten = [81.07] * 10
    j = one(at(ACC, 80.07), ten, same_runs=True)  # the runs' losses are identical too: the seed never reached them
    assert j.verdict == "INCONCLUSIVE" and j.flag == "identical seeds" and "never reached" in j.reason
    assert math.isnan(j.p_cell)
    noise = [81.07 + k * 1e-14 for k in range(10)]  # floating-point noise is no spread either
    assert one(at(ACC, 80.07), noise, same_runs=True).flag == "identical seeds"
    two = one(at(ACC, 90.0), [90.0, 90.0], same_runs=True)
    assert two.verdict == "INCONCLUSIVE" and two.flag == "identical seeds"
    real = one(at(ACC, 90.0), [90.0, 90.01, 89.99], same_runs=True)  # a real (small) spread is tested
    assert real.flag == "" and real.verdict == "REPRODUCED"


def test_identical_is_relative_to_the_values_scale():
    """Spread below identical_sd (1e-7) times max(|mean|, 1): relative for large values, absolute below 1."""
    assert stats.identical([1e6, 1e6 + 0.01, 1e6 - 0.01], 1e-7)  # sd 0.01: 1e-8 of the mean
    assert not stats.identical([1e6, 1e6 + 1.0, 1e6 - 1.0], 1e-7)
    assert stats.identical([-1e6, -1e6 + 0.01, -1e6 - 0.01], 1e-7)  # |mean|
    assert stats.identical([1e-3, 1e-3 + 5e-8, 1e-3 - 5e-8], 1e-7)  # below 1 the scale is 1
    assert not stats.identical([1e-3, 1e-3 + 5e-7, 1e-3 - 5e-7], 1e-7)
    assert stats.identical([2.0, 2.0 + 1e-7], 1e-7) and not stats.identical([2.0, 2.0 + 1e-6], 1e-7)


def test_a_collapsed_result_is_judged_and_flagged():
    """Bhyravabhottla's VGG16 printed "10%" (chance on 10 classes): a reproduction stuck at chance gives exactly
    10.0 on every seed. Runs that differ (or record nothing to tell) did get their seeds: judged on that value."""
    chance = dataclasses.replace(ACC, value=10.0, printed="10%")
    for same_runs in (False, None):
        j = one(chance, [10.0, 10.0, 10.0], same_runs=same_runs)
        assert j.verdict == "REPRODUCED" and j.flag == "collapsed" and "collapsed" in j.reason, (same_runs, j)
        assert "never reached the run;" not in j.reason and j.p_cell == 0.0 and j.seeds_needed == ""
    assert "losses differ" in one(chance, [10.0] * 3, same_runs=False).reason
    assert "record no losses" in one(chance, [10.0] * 3).reason
    assert one(chance, [10.0, 10.0, 10.01]).verdict == "REPRODUCED"  # the same answer as with a hair of spread
    below = one(at(ACC, 90.0), [10.0] * 3)  # collapsed far from a printed 90 %
    assert below.verdict == "NOT REPRODUCED" and below.flag == "collapsed"
    assert one(at(ACC, 5.0), [10.0] * 3).verdict == "BETTER"
    noise = one(chance, [10.0 + k * 1e-14 for k in range(3)])  # floating-point noise does not make it a spread
    assert noise.flag == "collapsed" and noise.p_cell == 0.0
    # exactly on the band's edge (printed 80.07: the band ends at 81.075) one value decides nothing
    edge = one(at(ACC, 80.07), [81.075] * 3)
    assert edge.verdict == "INCONCLUSIVE" and edge.flag == "collapsed" and "edge" in edge.seeds_needed
    edge_noise = one(at(ACC, 80.07), [81.075 + k * 1e-13 for k in range(3)])
    assert edge_noise.verdict == "INCONCLUSIVE"
    near = one(at(ACC, 80.07), [81.075 - 2e-6] * 3)  # within 1e-7 of the value's scale (80): still the edge
    assert near.verdict == "INCONCLUSIVE" and near.p_cell == 0.5
    small = one(SAVING, [0.575 + 8e-8] * 3)  # below 1 the noise scale is 1, not the value: 8e-8 is the edge
    assert small.verdict == "INCONCLUSIVE" and small.flag == "collapsed" and vd.band(SAVING)[0] == pytest.approx(0.575)
    low_edge = one(at(ACC, 80.07), [79.065] * 3)  # the lower edge likewise
    assert low_edge.verdict == "INCONCLUSIVE" and low_edge.p_cell == 0.5
    assert one(at(ACC, 80.07), [79.0651] * 3).verdict == "REPRODUCED"  # just inside: decided
    assert one(at(ACC, 80.07), [79.0649] * 3).verdict == "NOT REPRODUCED"
    # a collapsed cell is corrected with the others: it is decided at any level
    family = vd.judge([vd.Cell(chance, [10.0] * 3)] + [vd.Cell(at(ACC, 90.0), [88.0, 92.0, 90.0])] * 5, "paper")
    assert family[0].verdict == "REPRODUCED" and family[0].p_adjusted == 0.0


def test_not_comparable_profiles_and_hardware():
    values = [90.0, 90.1, 89.9]
    smoke = one(at(ACC, 90.0), values, profile="smoke")
    assert smoke.verdict == "NOT COMPARABLE" and "smoke" in smoke.reason
    assert one(at(ACC, 90.0), values, profile="scaled").verdict == "NOT COMPARABLE"
    other = one(at(TIME, 20.0), [20.0, 20.1, 19.9], devices={"NVIDIA H100 80GB HBM3"})
    assert other.verdict == "NOT COMPARABLE" and "RTX 3090" in other.reason  # the paper's hardware is named
    same = one(at(TIME, 20.0), [20.0, 20.1, 19.9], devices={"NVIDIA GeForce RTX 3090"})
    assert same.verdict == "REPRODUCED"
    mixed = one(at(TIME, 20.0), [20.0, 20.1, 19.9], devices={"NVIDIA GeForce RTX 3090", "NVIDIA H100 80GB HBM3"})
    assert mixed.verdict == "NOT COMPARABLE"  # every run must be on the paper's hardware


def test_a_partial_cell_is_judged_on_its_seeds_and_says_so():
    why = "1 of 4 seeds have no result file yet"
    j = one(at(ACC, 90.0), [90.0, 90.1, 89.9], status="PARTIAL", reason=why)
    assert j.verdict == "REPRODUCED" and j.reason == why
    assert one(at(ACC, 90.0), [90.0, 90.1, 89.9]).reason == ""
    collapsed = one(at(ACC, 90.0), [90.0] * 3, status="PARTIAL", reason=why)
    assert collapsed.flag == "collapsed" and collapsed.reason.startswith(why + "; collapsed")


def test_missing_failed_diverged_keep_their_reason():
    for status in ("MISSING", "FAILED", "DIVERGED"):
        j = one(ACC, [90.0, 91.0, 90.5], status=status, reason=f"why {status}")
        assert (j.verdict, j.reason) == (status, f"why {status}")  # survivors of a failed cell are not judged


def test_exact_cells_round_to_the_printed_value_in_every_profile():
    claim = dataclasses.replace(PARAMS, printed="896", value=896.0)
    for profile in ("smoke", "paper"):
        assert one(claim, [896.0], profile=profile, exact=True).verdict == "REPRODUCED"
        assert one(claim, [9248.0], profile=profile, exact=True).verdict == "NOT REPRODUCED"
    decimal = dataclasses.replace(FLOPS, printed="0.31", value=0.31)  # rounding at the printed decimals
    assert one(decimal, [0.3149], exact=True).verdict == "REPRODUCED"
    assert one(decimal, [0.3051], exact=True).verdict == "REPRODUCED"
    assert one(decimal, [0.3151], exact=True).verdict == "NOT REPRODUCED"
    # half up in decimal: 0.305 is the binary 0.30499999999999999334, which round() takes down to 0.3
    assert one(decimal, [0.305], exact=True).verdict == "REPRODUCED" and round(0.305, 2) == 0.3
    assert one(decimal, [0.315], exact=True).verdict == "NOT REPRODUCED"  # 0.315 rounds up to 0.32
    assert one(decimal, [0.30499], exact=True).verdict == "NOT REPRODUCED"
    odd = dataclasses.replace(FLOPS, printed="≈0.31", value=0.31)  # not a plain number: the value at its decimals
    assert one(odd, [0.305], exact=True).verdict == "REPRODUCED"
    assert one(odd, [0.315], exact=True).verdict == "NOT REPRODUCED"
    grouped = dataclasses.replace(FLOPS, printed="31,203.60", value=31203.6)  # thousands separators, a kept zero
    assert one(grouped, [31203.595], exact=True).verdict == "REPRODUCED"
    assert one(grouped, [31203.605], exact=True).verdict == "NOT REPRODUCED"
    assert one(grouped, [31203.6049], exact=True).verdict == "REPRODUCED"
    assert (
        one(dataclasses.replace(PARAMS, printed="896", value=896.0), [896.5], exact=True).verdict == "NOT REPRODUCED"
    )  # 896.5 rounds up to 897
    assert (
        one(dataclasses.replace(PARAMS, printed="896", value=896.0), [895.5], exact=True).verdict == "REPRODUCED"
    )  # where round() would give 896 by banker's rounding and 895.5 -> 896 half up, both agree


# ---------------------------------------------------------------- corrections


def test_holm_against_a_hand_worked_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> monotone 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # 2 x 0.6 capped at 1
    assert stats.holm([]) == []


def test_benjamini_hochberg_and_yekutieli_by_hand():
    # sorted: 0.005 x 4/1 = 0.02, 0.01 x 4/2 = 0.02, 0.03 x 4/3 = 0.04, 0.04 x 4/4 = 0.04 (monotone from the top)
    assert stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert stats.benjamini_hochberg([0.04, 0.01]) == pytest.approx([0.04, 0.02])
    assert stats.benjamini_hochberg([0.02, 0.03, 0.2]) == pytest.approx([0.045, 0.045, 0.2])
    c4 = 1 + 1 / 2 + 1 / 3 + 1 / 4
    assert stats.benjamini_yekutieli([0.01, 0.04, 0.03, 0.005]) == pytest.approx(
        [0.02 * c4, 0.04 * c4, 0.04 * c4, 0.02 * c4]
    )
    assert stats.benjamini_yekutieli([0.9, 0.95]) == pytest.approx([1.0, 1.0])  # 1.5 x 0.95 capped at 1
    assert stats.benjamini_hochberg([]) == []


def test_one_sided_tests_at_zero_spread_are_the_exact_limits():
    """A sample without spread (never judged: identical seeds are flagged first) still gets the limit values."""
    assert stats.p_greater([1.0, 1.0, 1.0], 0.0) == 0.0  # t = +inf
    assert stats.p_greater([1.0, 1.0, 1.0], 2.0) == 1.0  # t = -inf
    assert stats.p_greater([1.0, 1.0, 1.0], 1.0) == 0.5  # 0/0: no evidence either way
    assert stats.p_less([1.0, 1.0], 2.0) == 0.0


def test_level_reached():
    assert stats.level_reached([0.5, 0.6, 0.7, 0.8], 0.05, "holm") == pytest.approx(0.0125)
    assert stats.level_reached([0.5, 0.6, 0.7, 0.8], 0.05, "bh") == pytest.approx(0.0125)  # no rejection: 1 / m
    assert stats.level_reached([0.01, 0.02, 0.7, 0.8], 0.05, "bh") == pytest.approx(0.025)  # two of four
    assert stats.level_reached([0.01, 0.05, 0.7, 0.8], 0.05, "bh") == pytest.approx(0.0125)  # p = alpha: kept
    assert stats.level_reached([0.01, 0.02, 0.7, 0.8], 0.05, "by") == pytest.approx(0.025 / (1 + 1 / 2 + 1 / 3 + 1 / 4))


def test_the_correction_runs_over_the_cells_of_a_paper():
    """A cell significant alone becomes INCONCLUSIVE among many cells whose tests are not (BH: p x m / rank)."""
    values = [90.5, 90.7, 90.3]  # inside the band, near its edge
    raw = max(t_p(values, 89.0 - HALF, "greater"), t_p(values, 91.0 + HALF, "less"))
    assert 0.0125 < raw < 0.05 and one(at(ACC, 90.0), values).verdict == "REPRODUCED"
    noise = [88.0, 92.0, 90.0]
    together = vd.judge([vd.Cell(at(ACC, 90.0), values)] + [vd.Cell(at(ACC, 90.0), noise)] * 3, "paper")
    assert together[0].p_adjusted == pytest.approx(min(1.0, 4 * raw)) and together[0].verdict == "INCONCLUSIVE"
    holm = vd.judge([vd.Cell(at(ACC, 90.0), values)] + [vd.Cell(at(ACC, 90.0), noise)] * 3, "paper", method="holm")
    assert holm[0].p_adjusted == pytest.approx(min(1.0, 4 * raw))
    # ten cells each with that p: BH keeps every one at its raw p (rank i of 10: p x 10 / i, monotone from the
    # top), Holm multiplies the first step by 10
    bh = vd.judge([vd.Cell(at(ACC, 90.0), values)] * 10, "paper")
    assert [j.verdict for j in bh] == ["REPRODUCED"] * 10 and bh[0].p_adjusted == pytest.approx(raw)
    holm = vd.judge([vd.Cell(at(ACC, 90.0), values)] * 10, "paper", method="holm")
    assert [j.verdict for j in holm] == ["INCONCLUSIVE"] * 10 and holm[0].p_adjusted == pytest.approx(10 * raw)


def test_the_tolerances_file_gives_every_metric_a_reasoned_band():
    tol = vd.tolerances()
    from bench import experiments as ex
    from bench.claims.registry import METRIC_UNITS

    assert set(tol["metrics"]) == set(METRIC_UNITS)
    for metric, spec in tol["metrics"].items():
        assert len(spec.get("why", "")) > 20, metric
        assert ("exact" in spec) != bool({"points", "relative"} & set(spec)), metric
    assert tol["correction"] in stats.CORRECTIONS
    assert set(tol["profiles"]) == set(ex.profiles())
    assert tol["profiles"]["paper"]["comparable"] and not tol["profiles"]["smoke"]["comparable"]
    assert vd.guarantee().startswith(
        "Benjamini-Hochberg over the tested cells of a paper at q = 0.05: among a "
        "paper's decided cells (REP, BETTER, NOT REP) the expected share of wrong "
        "verdicts is at most 5 % (the false discovery rate), proven for cells from "
        "independent runs"
    )
    assert vd.rule() == "Benjamini-Hochberg, false discovery rate 0.05" and vd.rule_name() == "Benjamini-Hochberg"
    # a level with four significant digits is written whole, in every rule's guarantee (not rounded to three)
    assert all("at most 1.234 % " in text.format(pct=100 * 0.01234) for text in vd.GUARANTEES.values())
