"""Does each method learn? A run's test accuracy against chance, summed up per method.

A method that has stopped learning (a broken loss, a frozen layer that should train, a head that never sees a
gradient) still finishes its runs and writes numbers, so a smoke or check report would look the same: every run
at chance. Here each FINISHED run's test accuracy is tested against chance (1 / classes of its dataset) with a
one-sided binomial test on its own test samples, and each method's runs are summed up: how many are above
chance at p < ALPHA, and how far above (the median ratio accuracy / chance). The reports print this per method,
and a test runs one cheap smoke experiment per method and fails when it is not above chance.
"""

import statistics
from collections import defaultdict

from scipy.stats import binomtest

from bench.claims.datasets import DATASETS

ALPHA = 0.01  # a run is above chance when the binomial test rejects "accuracy = chance" at this level


def chance_pct(dataset: str) -> float:
    return 100.0 / DATASETS[dataset].num_classes


def evaluated_samples(result: dict) -> int:
    """The test samples the run was evaluated on: its data summary, else its config's cap."""
    n = (result.get("data") or {}).get("test_samples") or result["config"]["data"].get("test_samples")
    return int(n or DATASETS[result["config"]["dataset"]].test_size)


def versus_chance(result: dict) -> tuple[float, float]:
    """(accuracy / chance, one-sided binomial p of 'no better than chance') of one FINISHED run."""
    cfg = result["config"]
    acc, chance, n = result["metrics"]["test_accuracy"], chance_pct(cfg["dataset"]), evaluated_samples(result)
    correct = min(n, max(0, round(acc / 100 * n)))
    return acc / chance, binomtest(correct, n, chance / 100, alternative="greater").pvalue


def per_method(found: dict) -> list[dict]:
    """One row per method over the valid result files `found` ((experiment, seed) -> result): FINISHED runs,
    how many are above chance, the median and lowest ratio accuracy / chance (with the run that has it), and the
    runs that did not finish."""
    runs = defaultdict(list)
    unfinished = defaultdict(int)
    for (eid, _seed), r in sorted(found.items()):
        method = r["config"]["method"]
        if r["status"] != "FINISHED":
            unfinished[method] += 1
            continue
        ratio, p = versus_chance(r)
        runs[method].append((ratio, p, eid, r["metrics"]["test_accuracy"]))
    rows = []
    for method in sorted(set(runs) | set(unfinished)):
        mine = runs.get(method, [])
        lowest = min(mine, default=None)
        rows.append(
            {
                "method": method,
                "finished": len(mine),
                "above": int(sum(p < ALPHA for _, p, _, _ in mine)),
                "median_ratio": statistics.median(x[0] for x in mine) if mine else float("nan"),
                "lowest": lowest,
                "unfinished": unfinished.get(method, 0),
            }
        )
    return rows
