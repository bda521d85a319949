"""Seeds -> statistics: mean, sample standard deviation and a 95 % t-interval of a cell's per-seed values."""
import math

from scipy import stats as st

CONFIDENCE = 0.95


def summarize(values: list[float]) -> dict:
    """n, mean, sd (ddof 1) and the two-sided 95 % t confidence interval of the mean (n >= 2)."""
    n = len(values)
    out = {"n": n, "mean": math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if n == 0:
        return out
    mean = sum(values) / n
    out["mean"] = mean
    if n >= 2:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = st.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n)
        out.update(sd=sd, ci_low=mean - half, ci_high=mean + half)
    return out
