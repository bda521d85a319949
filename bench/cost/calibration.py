"""What a device charges for a job's work (bench/cost/job_cost.py): a Calibration, probed on this device
(bench/cost/probes.py), given as a rate, read from a calibration file, or fitted on the papers' printed times.

Seconds = forward seconds (timed) or units / rate (untimed) + elements read x per_read + searched pairs x per_pair +
pair dims x per_pair_dim + batches x per_batch + bytes copied between host and device / HOST_DEVICE_BYTES_PER_S.

Calibrating on the papers' printed times instead (`--calibrate printed`): a paper that states the GPU its times
were measured on (papers.yaml `hardware_match`; of the four only Cruciata et al., an RTX 3090) prints what each of
its backprop jobs took; each such registry cell gives a rate, the job's units (this profile's config of the cell's
experiment) over the printed seconds, and the plan uses their median. The rates spread widely (small models run
far below the GPU's peak: per-sample costs that do not scale with MACs, such as the authors' input pipeline), so
the plan also gives the totals at the quartiles and the extremes of them. No separate overhead term is fitted: the
printed times include the authors' overheads, and the median rate carries them. This is the GPU-hours figure
available without a GPU: an estimate for that paper's GPU, traceable to the cells it was fitted on.
"""

import statistics
from dataclasses import dataclass

from bench import BenchError
from bench import experiments as ex
from bench.claims import registry
from bench.cost.job_cost import job_cost

# PredSim's offloaded optimizer states (bench.methods.offload) cross PCIe twice a step, pinned. An assumption, not
# measured here (no probe times copies yet): the papers' GPU class, an RTX 3090, sits on PCIe 4.0 x16, 31.5 GB/s
# each way by the PCIe 4.0 specification (16 GT/s x 16 lanes, 128b/130b encoding); pinned copies reach about 80 % of
# a link's rate in CUDA's bandwidthTest, so 25 GB/s. Every copy is charged in full: none hidden behind compute by the
# prefetch (an upper bound).
HOST_DEVICE_BYTES_PER_S = 25e9


@dataclass
class Calibration:
    """What a device charges. Timed (a probed calibration, on the device it was probed on): a job's measured
    forward seconds (its layers timed there: bench.cost.method_costs.time_leaves) + elements read x per_read + searched
    pairs x per_pair + pair dims x per_pair_dim + batches x per_batch (the loss, the optimizer step). Untimed (the
    printed calibration, `--rate`, a calibration file from another machine): units and pair dims at `rate`, plus
    the same read, pair and batch terms (0 unless given)."""

    rate: float
    per_read: float = 0.0
    per_pair: float = 0.0
    per_pair_dim: float = 0.0
    per_batch: float = 0.0
    timed: bool = False
    source: str = "given"
    device: str = ""

    def seconds(self, cost: dict) -> float:
        compute = cost["secs"] if self.timed else (cost["units"] + cost.get("pair_dims", 0.0)) / self.rate
        return (
            compute
            + cost.get("reads", 0.0) * self.per_read
            + cost.get("batches", 0.0) * self.per_batch
            + cost.get("pairs", 0.0) * self.per_pair
            + (cost.get("pair_dims", 0.0) * self.per_pair_dim if self.timed else 0.0)
            + cost.get("copy_bytes", 0.0) / HOST_DEVICE_BYTES_PER_S
        )


def predicted_seconds(cost: dict, rate: float) -> float:
    """A job's seconds at `rate` alone (the printed calibration: the papers' times carry their overheads)."""
    return Calibration(rate).seconds(cost)


def printed_times(method: str | None = None) -> list[dict]:
    """The training times the papers print for jobs on the hardware they state (papers.yaml `hardware_match`),
    each with the job's units (in the `paper` profile: the runs the times were printed for) and the rate they
    imply (units per printed second)."""
    meta = registry.papers()
    rows = []
    for c in registry.load_claims():
        if c.metric != "train_time" or not meta[c.paper].get("hardware_match") or method not in (None, c.method):
            continue
        exp = ex.Experiment(*c.experiment_key())
        seconds = c.value * registry.SECONDS_PER_TIME_UNIT[c.unit]
        units = job_cost(exp, "paper")["units"]
        rows.append(
            {
                "claim": c.id,
                "paper": c.paper,
                "experiment": exp.id,
                "method": c.method,
                "printed_s": seconds,
                "units": units,
                "rate": units / seconds,
                "hardware": meta[c.paper]["hardware"],
            }
        )
    return rows


def printed_calibration() -> dict:
    """The median rate of the backprop jobs' printed times on stated hardware, with the quartiles and extremes."""
    rows = printed_times("backprop")
    if not rows:
        raise BenchError("no paper prints backprop training times on stated hardware (papers.yaml hardware_match)")
    rates = [r["rate"] for r in rows]
    q1, median, q3 = statistics.quantiles(rates, n=4, method="inclusive") if len(rates) > 1 else rates * 3
    meta = registry.papers()
    return {
        "source": "printed",
        "rate": median,
        "rate_q1": q1,
        "rate_q3": q3,
        "rate_min": min(rates),
        "rate_max": max(rates),
        "cells": [r["claim"] for r in rows],
        "hardware": sorted({r["hardware"] for r in rows}),
        "gpu": sorted({meta[r["paper"]]["hardware_match"] for r in rows}),
    }
