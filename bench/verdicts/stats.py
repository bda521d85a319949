"""Seeds -> statistics: summaries with confidence intervals, one-sample and equivalence tests, the multiple-testing
corrections (Benjamini-Hochberg, Benjamini-Yekutieli, Holm), the exact power of the tests and the number of seeds
a test would need. Pure functions of finite numbers (scipy); a NaN or an infinity is refused, never decided on.
The verdicts built on them live in bench/verdicts/cells.py and bench/verdicts/headlines.py.
"""

import math
from functools import lru_cache

import numpy as np
from scipy import special
from scipy import stats as st

CONFIDENCE = 0.95


def _finite(values: list[float]) -> list[float]:
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite value {bad[0]!r} among {len(values)} values: no statistic is computed from it")
    return values


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; nan for fewer than two values)."""
    n = len(_finite(values))
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan)


def identical(values: list[float], relative_sd: float) -> bool:
    """Values whose spread is floating-point noise: sd <= relative_sd x max(|mean|, 1)."""
    mean, sd = mean_sd(values)
    return sd <= relative_sd * max(abs(mean), 1.0)


def summarize(values: list[float]) -> dict:
    """n, mean, sd (ddof 1) and the two-sided 95 % t-interval of the mean. The t-interval, not a bootstrap: at the
    seed counts a user can afford (3-10) the BCa interval covers the mean 88-90 % of the time instead of 95 %,
    the t-interval 95 % for normal spreads (tests/test_decision_rule.py simulates both)."""
    n = len(values)
    out = {"n": n, "mean": math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_method": ""}
    if n == 0 or not all(math.isfinite(v) for v in values):
        return out
    mean, sd = mean_sd(values)
    out["mean"] = mean
    if n < 2:
        return out
    half = st.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n)
    out.update(sd=sd, ci_low=mean - half, ci_high=mean + half, ci_method="t")
    return out


def _t(mean: float, sd: float, n: int, mu: float) -> float:
    """The one-sample t statistic; a sample without spread gives +-inf (or 0 exactly at mu). The verdicts never
    let a sample without spread reach a test (bench/verdicts/cells.py: identical seeds); the limit is kept exact
    here."""
    if sd > 0:
        return (mean - mu) / (sd / math.sqrt(n))
    return 0.0 if mean == mu else math.copysign(math.inf, mean - mu)


def p_greater(values: list[float], mu: float) -> float:
    """One-sided one-sample t-test, H1: the population mean is greater than mu."""
    n = len(values)
    mean, sd = mean_sd(values)
    t = _t(mean, sd, n, mu)
    return 0.5 if t == 0 and sd == 0 else float(special.stdtr(n - 1, -t))  # = st.t.sf(t, n - 1), 50x faster


def p_greater_from(mean, sd, n, mu):
    """p_greater from summaries, element-wise over numpy arrays (mean, sd > 0, n >= 2, mu broadcast together):
    the same one-sided t-test, for judging many cells or simulated draws at once."""
    mean, sd, n, mu = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (mean, sd, n, mu)))
    return special.stdtr(n - 1, -(mean - mu) / (sd / np.sqrt(n)))


def p_less(values: list[float], mu: float) -> float:
    """One-sided one-sample t-test, H1: the population mean is less than mu."""
    return p_greater([-v for v in values], -mu)


def p_two_sided(values: list[float], mu: float) -> float:
    """The two-sided one-sample t-test against mu."""
    return min(1.0, 2.0 * min(p_greater(values, mu), p_less(values, mu)))


def tost(values: list[float], low: float, high: float) -> float:
    """Two one-sided tests: the p-value of H1 "low < mean < high" (the larger of the two one-sided p-values)."""
    return max(p_greater(values, low), p_less(values, high))


# ---------------------------------------------------------------- multiple testing


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: the i-th smallest p times (m - i + 1), made
    monotone and capped at 1. Rejecting where the adjusted p < alpha keeps the family-wise error rate <= alpha."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(pvalues: list[float], dependence_factor: float = 1.0) -> list[float]:
    """Benjamini-Hochberg step-up adjusted p-values, in the input's order: the i-th smallest p times m / i (times
    `dependence_factor`), made monotone from the largest down and capped at 1. Rejecting where the adjusted
    p < q keeps the false discovery rate (the expected share of wrong rejections among the rejections) <= q for
    independent or positively dependent tests; with the factor sum(1/i, i <= m) (Benjamini-Yekutieli) under any
    dependence."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i], reverse=True)
    adjusted, running = [0.0] * m, 1.0
    for k, i in enumerate(order):
        rank = m - k  # the rank of pvalues[i] from the smallest, 1-based
        running = min(running, dependence_factor * m / rank * pvalues[i])
        adjusted[i] = min(1.0, running)
    return adjusted


def _by_factor(m: int) -> float:
    """Benjamini-Yekutieli's price for arbitrary dependence: sum(1/i, i <= m)."""
    return sum(1.0 / i for i in range(1, m + 1))


def benjamini_yekutieli(pvalues: list[float]) -> list[float]:
    return benjamini_hochberg(pvalues, _by_factor(len(pvalues)))


CORRECTIONS = {"bh": benjamini_hochberg, "by": benjamini_yekutieli, "holm": holm}


def adjust(pvalues: list[float], method: str) -> list[float]:
    return CORRECTIONS[method](pvalues)


def adjust_rows(pvalues: np.ndarray, method: str) -> np.ndarray:
    """`adjust` over each row of a 2-D array (one family per row), vectorised for the power simulation: the same
    adjusted p-values (ties give equal values either way)."""
    p = np.asarray(pvalues, dtype=float)
    rows, m = p.shape
    order = np.argsort(p, axis=1, kind="stable")
    ordered = np.take_along_axis(p, order, axis=1)
    rank = np.arange(1, m + 1)
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - rank + 1) * ordered), axis=1)
    else:
        factor = _by_factor(m) if method == "by" else 1.0
        adjusted = np.minimum.accumulate((factor * m / rank * ordered)[:, ::-1], axis=1)[:, ::-1]
        adjusted = np.minimum(1.0, adjusted)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=1)
    return out


def level_reached(adjusted: list[float], alpha: float, method: str) -> float:
    """The raw p-value level that one more test of the family would have to meet to be rejected, given the family's
    adjusted p-values: alpha / m for Holm (its strictest step, Bonferroni's level); alpha * max(R, 1) / m for
    Benjamini-Hochberg with R rejections (and over sum(1/i) for Benjamini-Yekutieli)."""
    m = max(len(adjusted), 1)
    if method == "holm":
        return alpha / m
    rejected = max(sum(p < alpha for p in adjusted), 1)
    level = alpha * rejected / m
    return level / _by_factor(m) if method == "by" else level


# ---------------------------------------------------------------- power and seeds needed


def power_one_sided(effect: float, sd: float, n: int, alpha: float) -> float:
    """Power of a one-sided one-sample t-test at level alpha when the true mean exceeds the bound by `effect`
    (> 0) and the spread is sd: P(T > t_crit) with T noncentral t on n - 1 degrees of freedom."""
    if n < 2:
        return 0.0
    crit = st.t.isf(alpha, n - 1)
    return float(st.nct.sf(crit, n - 1, effect * math.sqrt(n) / sd))


@lru_cache(maxsize=64)
def _sd_ratios(df: int, points: int = 20_000) -> np.ndarray:
    """s / sd at `points` equally likely quantiles of the sample sd's distribution ((n - 1) s^2 / sd^2 is
    chi-square on df = n - 1): the midpoint rule in probability space."""
    return np.sqrt(st.chi2.ppf((np.arange(points) + 0.5) / points, df) / df)


def power_tost(low_effect: float, high_effect: float, sd: float, n: int, alpha: float) -> float:
    """Exact power of TOST at level alpha for a true mean `low_effect` above the lower bound and `high_effect` below
    the upper one, with spread sd and n seeds. TOST rejects when L + c s/sqrt(n) < mean < U - c s/sqrt(n), c the
    one-sided t quantile; given the sample sd s the mean is normal and independent of s, so the power is one
    expectation over s:
        E_s[ max(0, Phi(a_high - c s/sd) - Phi(c s/sd - a_low)) ],  a = effect sqrt(n) / sd,
    taken over 20,000 equally likely quantiles of s (accurate to about 1e-4; tests/test_decision_rule.py checks it
    against simulation). Not the product of the two one-sided powers: the two rejections are negatively
    dependent through s."""
    if n < 2 or sd <= 0:
        return 0.0
    c = st.t.isf(alpha, n - 1)
    a_low, a_high = low_effect * math.sqrt(n) / sd, high_effect * math.sqrt(n) / sd
    cr = c * _sd_ratios(n - 1)
    return float(np.clip(special.ndtr(a_high - cr) - special.ndtr(cr - a_low), 0.0, None).mean())


def sd_interval(sd: float, n: int, confidence: float) -> tuple[float, float]:
    """The two-sided `confidence` interval of the population sd from a sample sd of n values: (n - 1) s^2 / sd^2
    is chi-square on n - 1 degrees of freedom."""
    df = n - 1
    return (
        sd * math.sqrt(df / st.chi2.ppf(0.5 + confidence / 2, df)),
        sd * math.sqrt(df / st.chi2.ppf(0.5 - confidence / 2, df)),
    )


def seeds_needed(power_at, power: float, limit: int = 10_000) -> int | None:
    """The smallest n >= 2 with power_at(n) >= power (power grows with n): doubling from 2 until it is enough,
    then bisection below; None when no n up to `limit` is enough."""
    lo, hi = 2, 2
    while power_at(hi) < power:
        if hi >= limit:
            return None
        lo, hi = hi + 1, min(2 * hi, limit)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power_at(mid) >= power else (mid + 1, hi)
    return lo
