"""Seeds -> statistics: summaries with confidence intervals, one-sample and equivalence tests, Holm's correction,
and the number of seeds a test would need. Pure functions of numbers (scipy); the verdicts built on them live in
bench/verdicts.py and bench/headlines.py.
"""
import math

import numpy as np
from scipy import stats as st

CONFIDENCE = 0.95


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; nan for fewer than two values)."""
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan)


def summarize(values: list[float], bca_min_n: int | None = None, resamples: int = 9999, seed: int = 0) -> dict:
    """n, mean, sd (ddof 1) and a two-sided 95 % interval of the mean: the t-interval, or the bootstrap BCa
    interval when `bca_min_n` is given and n >= bca_min_n (seeded, so the same values give the same interval)."""
    n = len(values)
    out = {"n": n, "mean": math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_method": ""}
    if n == 0:
        return out
    mean, sd = mean_sd(values)
    out["mean"] = mean
    if n < 2:
        return out
    out["sd"] = sd
    if bca_min_n is not None and n >= bca_min_n and sd > 0:
        res = st.bootstrap((np.asarray(values, dtype=float),), np.mean, confidence_level=CONFIDENCE,
                           n_resamples=resamples, method="BCa", rng=np.random.default_rng(seed))
        out.update(ci_low=float(res.confidence_interval.low), ci_high=float(res.confidence_interval.high),
                   ci_method="BCa")
    else:
        half = st.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n)
        out.update(ci_low=mean - half, ci_high=mean + half, ci_method="t")
    return out


def _t(mean: float, sd: float, n: int, mu: float) -> float:
    """The one-sample t statistic; a sample without spread gives +-inf (or 0 exactly at mu)."""
    if sd > 0:
        return (mean - mu) / (sd / math.sqrt(n))
    return 0.0 if mean == mu else math.copysign(math.inf, mean - mu)


def p_greater(values: list[float], mu: float) -> float:
    """One-sided one-sample t-test, H1: the population mean is greater than mu."""
    n = len(values)
    mean, sd = mean_sd(values)
    t = _t(mean, sd, n, mu)
    return 0.5 if t == 0 and sd == 0 else float(st.t.sf(t, n - 1))


def p_less(values: list[float], mu: float) -> float:
    """One-sided one-sample t-test, H1: the population mean is less than mu."""
    return p_greater([-v for v in values], -mu)


def p_two_sided(values: list[float], mu: float) -> float:
    """The two-sided one-sample t-test against mu."""
    return min(1.0, 2.0 * min(p_greater(values, mu), p_less(values, mu)))


def tost(values: list[float], low: float, high: float) -> float:
    """Two one-sided tests: the p-value of H1 "low < mean < high" (the larger of the two one-sided p-values)."""
    return max(p_greater(values, low), p_less(values, high))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: the i-th smallest p times (m - i + 1), made
    monotone and capped at 1. A hypothesis is rejected at family-wise level alpha when its adjusted p < alpha."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def power_one_sided(effect: float, sd: float, n: int, alpha: float) -> float:
    """Power of a one-sided one-sample t-test at level alpha when the true mean exceeds the bound by `effect`
    (> 0) and the spread is sd: P(T > t_crit) with T noncentral t on n - 1 degrees of freedom."""
    if n < 2:
        return 0.0
    crit = st.t.isf(alpha, n - 1)
    return float(st.nct.sf(crit, n - 1, effect * math.sqrt(n) / sd))


def seeds_needed(effects: list[float], sd: float, alpha: float, power: float, limit: int = 10_000) -> int | None:
    """The smallest n at which one-sided t-tests against every bound in `effects` (true mean minus bound, each
    > 0) reach `power` together (the product of their powers, a lower bound for TOST's), assuming the observed
    mean and spread are the truth. None when no n up to `limit` does (or an effect is not positive)."""
    if sd <= 0 or any(e <= 0 for e in effects):
        return None

    def enough(n: int) -> bool:
        return math.prod(power_one_sided(e, sd, n, alpha) for e in effects) >= power

    if not enough(limit):
        return None
    lo, hi = 2, limit
    while lo < hi:  # power grows with n: bisect for the first n that is enough
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid + 1, hi)
    return lo
