"""`bench power`: how often the decision rule gives the right verdict at a given number of seeds and spread, by
simulation (no training), so that a user can choose the seed count before renting GPUs.

One simulated reproduction of a paper: its registry cells of one metric (test accuracy by default; Ma et al.'s
122 cells), each given a true mean, then `seeds` values drawn around it with standard deviation `sd`, judged
together by bench/verdicts/cells.judge in the `paper` profile exactly as real runs are. The true means follow a mixture:
  at      half the cells at their printed value
  worse   a quarter 2 points worse than printed (below it, for accuracy)
  spread  a quarter anywhere within 3 points of it (uniform), band edges included
and the rates are counted over `replicates` such reproductions:
  P(REP | at)        a cell at its printed value comes out REPRODUCED
  P(NOT REP | worse) a cell 2 points worse comes out NOT REPRODUCED
  wrong share (FDR)  the mean, over reproductions, of the share of wrong verdicts among the decided cells: what
                     Benjamini-Hochberg bounds by alpha
  any wrong (FWER)   the share of reproductions with at least one wrong verdict: what Holm bounds by alpha
A verdict is right when the true mean is where it says: REPRODUCED strictly inside the band, NOT REPRODUCED or
BETTER on or beyond the edge on its side.
"""
from functools import cache

import numpy as np

from bench.claims.registry import HIGHER_IS_BETTER, load_claims
from bench.verdicts import cells as vd

MIXTURE = (("at", 0.5), ("worse", 0.25), ("spread", 0.25))
WORSE_BY = 2.0
SPREAD = 3.0


@cache
def paper_cells(paper: str, metric: str = "test_accuracy") -> tuple:
    cells = tuple(c for c in load_claims() if c.paper == paper and c.metric == metric and not c.derived_from)
    if not cells:
        raise ValueError(f"paper {paper!r} has no {metric} cells in the registry")
    return cells


def truth(mean: float, low: float, high: float, higher_is_better) -> str:
    """The verdict that is right for a true mean (the band is open: an edge counts as outside)."""
    if low < mean < high:
        return "REPRODUCED"
    if higher_is_better is None:
        return "NOT REPRODUCED"
    return "BETTER" if (mean >= high) == bool(higher_is_better) else "NOT REPRODUCED"


def simulate(seeds: int, sd: float, replicates: int = 200, paper: str = "ma", metric: str = "test_accuracy",
             correction: str | None = None, rng_seed: int = 0) -> dict:
    """The rates above for one (seeds, sd), with the correction of bench/tolerances.yaml unless one is named."""
    claims = paper_cells(paper, metric)
    worse_sign = -1.0 if HIGHER_IS_BETTER[metric] else 1.0
    rng = np.random.default_rng(rng_seed)
    kinds = [k for k, share in MIXTURE for _ in range(round(share * len(claims)))]
    kinds = (kinds + ["at"] * len(claims))[:len(claims)]
    counts = {"at": [0, 0], "worse": [0, 0]}
    shares, any_wrong, decided_total = [], 0, 0
    for _ in range(replicates):
        order = rng.permutation(kinds)
        means = []
        for claim, kind in zip(claims, order):
            offset = {"at": 0.0, "worse": worse_sign * WORSE_BY, "spread": rng.uniform(-SPREAD, SPREAD)}[kind]
            means.append(claim.value + offset)
        cells = [vd.Cell(c, list(rng.normal(m, sd, seeds))) for c, m in zip(claims, means)]
        judged = vd.judge(cells, "paper", with_seeds_needed=False, method=correction)
        wrong = decided = 0
        for claim, kind, mean, j in zip(claims, order, means, judged):
            if kind in counts:
                counts[kind][1] += 1
                counts[kind][0] += j.verdict == ("REPRODUCED" if kind == "at" else "NOT REPRODUCED")
            if j.verdict in ("REPRODUCED", "BETTER", "NOT REPRODUCED"):
                decided += 1
                wrong += j.verdict != truth(mean, j.band_low, j.band_high, HIGHER_IS_BETTER[metric])
        shares.append(wrong / decided if decided else 0.0)
        any_wrong += wrong > 0
        decided_total += decided
    return {"seeds": seeds, "sd": sd, "cells": len(claims), "replicates": replicates,
            "correction": correction or vd.correction(),
            "p_reproduced_at": counts["at"][0] / counts["at"][1],
            "p_not_reproduced_worse": counts["worse"][0] / counts["worse"][1],
            "wrong_share": float(np.mean(shares)), "any_wrong": any_wrong / replicates,
            "decided_share": decided_total / (replicates * len(claims))}


def table(seed_counts: list[int], sds: list[float], **kw) -> list[dict]:
    return [simulate(n, sd, **kw) for n in seed_counts for sd in sds]


def smallest_seeds(sd: float, target: float = 0.8, start: int = 2, limit: int = 20, **kw) -> int | None:
    """The smallest seed count at which both P(REP | at) and P(NOT REP | worse) reach `target` at spread sd."""
    for n in range(start, limit + 1):
        r = simulate(n, sd, **kw)
        if r["p_reproduced_at"] >= target and r["p_not_reproduced_worse"] >= target:
            return n
    return None


def describe(rows: list[dict]) -> str:
    from tabulate import tabulate

    first = rows[0]
    body = [[r["seeds"], f"{r['sd']:g}", f"{r['p_reproduced_at']:.2f}", f"{r['p_not_reproduced_worse']:.2f}",
             f"{r['wrong_share']:.3f}", f"{r['any_wrong']:.2f}", f"{r['decided_share']:.2f}"] for r in rows]
    return (f"{first['cells']} cells of one paper, {first['replicates']} simulated reproductions per row, correction "
            f"{first['correction']}; true means: {', '.join(f'{k} {s:g}' for k, s in MIXTURE)} "
            f"(at = printed, worse = {WORSE_BY:g} points worse, spread = uniform within {SPREAD:g} points)\n"
            + tabulate(body, headers=["seeds", "sd (points)", "P(REP), at printed",
                                      f"P(NOT REP), {WORSE_BY:g} worse", "wrong share (FDR)",
                                      "any wrong (FWER)", "decided"], tablefmt="github", disable_numparse=True))

