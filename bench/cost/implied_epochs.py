"""The epochs each printed training time implies (listed by `bench audit`): the printed calibration
(bench/cost/calibration.py) read backwards. The configured schedule of the cell's experiment (the `paper` profile)
is scaled until its seconds at the median rate meet the printed ones, with the range at the quartile rates. For the
papers that do not state their GPU this assumes one like the calibration's. Small models run far below the median
rate (per-sample costs that do not scale with MACs), so their implied epochs are upper bounds.
"""

from functools import cache

from bench import BenchError
from bench import experiments as ex
from bench.claims import registry
from bench.cost.calibration import predicted_seconds, printed_calibration
from bench.cost.job_cost import job_cost


def _implied(claims, calibration: dict, profile: str) -> list[dict]:
    meta = registry.papers()
    rates = {k: calibration[k] for k in ("rate", "rate_q1", "rate_q3", "rate_min", "rate_max")}
    rows = []
    for c in claims:
        if c.metric != "train_time" or c.derived_from:
            continue
        exp = ex.Experiment(*c.experiment_key())
        row = {
            "claim": c.id,
            "paper": c.paper,
            "printed": c.printed,
            "unit": c.unit,
            "experiment": exp.id,
            "method": c.method,
            "printed_s": c.value * registry.SECONDS_PER_TIME_UNIT[c.unit],
            "profile": profile,
            "hardware_stated": bool(meta.get(c.paper, {}).get("hardware_match")),
        }
        try:
            cost = job_cost(exp, profile)
        except (ValueError, BenchError) as e:  # a method without a cost model, a model or grid the suite lacks
            rows.append(row | {"skipped": str(e)})
            continue
        seconds = {k: predicted_seconds(cost, rate) for k, rate in rates.items()}
        row.update(
            epochs=cost["epochs"], stage_epochs=cost["stage_epochs"], units=cost["units"], predicted_s=seconds["rate"]
        )
        # the configured schedule scaled until its predicted seconds meet the printed ones: a faster GPU (a higher
        # rate) gets through more epochs in the printed time
        row.update({k.replace("rate", "implied"): cost["epochs"] * row["printed_s"] / s for k, s in seconds.items()})
        rows.append(row)
    return rows


@cache
def _implied_default() -> tuple[dict, ...]:
    return tuple(_implied(registry.load_claims(), printed_calibration(), "paper"))


def implied_epochs(claims=None, calibration: dict | None = None, profile: str = "paper") -> list[dict]:
    """The epochs each printed training time implies: for every train_time cell (derived cells aside), its
    experiment's configured schedule in `profile` (the paper's settings), its seconds predicted at the printed
    calibration's median rate (printed_calibration(): the backprop times of the paper that states its GPU), and
    implied = configured epochs x printed seconds / predicted seconds, also at the quartile and extreme rates
    (implied_q1 .. implied_q3, implied_min .. implied_max: a slower rate, fewer epochs). For a staged method
    (layer_to_layer, si_forward, ...) the configured epochs are all its stages' epochs together (stage_epochs), and
    the implied ones the whole schedule scaled alike. A cell whose experiment has no cost model comes back with
    `skipped` (why) instead. For a paper that does not state its GPU the numbers assume one like the calibration's
    (`hardware_stated` False). The default call (the registry, printed calibration, `paper` profile) is cached."""
    if claims is None and calibration is None and profile == "paper":
        return [dict(r) for r in _implied_default()]
    return _implied(
        registry.load_claims() if claims is None else claims,
        printed_calibration() if calibration is None else calibration,
        profile,
    )
