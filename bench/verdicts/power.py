"""`bench power`: how often the decision rule gives the right verdict at a given number of seeds and spread, by
simulation (no training), so that a user can choose the seed count before renting GPUs.

One simulated reproduction of a paper: its registry cells of one metric (test accuracy by default; Ma et al.'s
122 cells), each given a true mean by a scenario, then `seeds` values drawn around it with standard deviation `sd`,
judged together as bench/verdicts/cells.judge judges real runs in the `paper` profile: the same band tests
(cells.band_tests, cells.decide) and the same correction, vectorised over the reproductions (tests/test_decision_rule.py
checks the verdicts against `judge`). The scenarios (`--scenario`):
  at        every cell at its printed value
  off-X     every cell X points off its printed value (the side drawn at random per cell), e.g. off-0.25
  normal    every cell off by an amount drawn from N(0, sd): implementation details the paper left open move the
            mean about as much as the seed does
  mix       half the cells at their printed value, a quarter 2 points worse (below it, for accuracy), a quarter
            anywhere within 3 points of it (uniform), band edges included
and the rates are counted over `replicates` such reproductions:
  right              the share of cells given the right verdict
  P(REP | at)        a cell at its printed value comes out REPRODUCED (scenarios at, mix)
  P(NOT REP | worse) a cell 2 points worse comes out NOT REPRODUCED (mix)
  decided            the share of cells with a verdict (REPRODUCED, BETTER, NOT REPRODUCED)
  wrong share (FDR)  the mean, over reproductions, of the share of wrong verdicts among the decided cells: what
                     Benjamini-Hochberg bounds by alpha
  any wrong (FWER)   the share of reproductions with at least one wrong verdict: what Holm bounds by alpha
A verdict is right when the true mean is where it says: REPRODUCED strictly inside the band, NOT REPRODUCED or
BETTER on or beyond the edge on its side.
"""

import math
import re
from functools import cache

import numpy as np

from bench.claims.registry import HIGHER_IS_BETTER, load_claims
from bench.verdicts import cells as vd
from bench.verdicts import stats

MIXTURE = (("at", 0.5), ("worse", 0.25), ("spread", 0.25))
WORSE_BY = 2.0
SPREAD = 3.0
SCENARIOS = ("at", "off-0.25", "off-0.5", "normal", "mix")  # docs/statistics.md's table; off-X takes any X >= 0


@cache
def paper_cells(paper: str, metric: str = "test_accuracy") -> tuple:
    cells = tuple(c for c in load_claims() if c.paper == paper and c.metric == metric and not c.derived_from)
    if not cells:
        raise ValueError(f"paper {paper!r} has no {metric} cells in the registry")
    return cells


def check_scenario(name: str) -> str:
    """The scenario's name, or ValueError saying which ones exist."""
    if name in ("at", "normal", "mix") or re.fullmatch(r"off-\d+(\.\d+)?", name):
        return name
    raise ValueError(f"unknown scenario '{name}' (one of: at, off-X with X in points such as off-0.25, normal, mix)")


def truth(mean: float, low: float, high: float, higher_is_better) -> str:
    """The verdict that is right for a true mean (the band is open: an edge counts as outside)."""
    if low < mean < high:
        return "REPRODUCED"
    if higher_is_better is None:
        return "NOT REPRODUCED"
    return "BETTER" if (mean >= high) == bool(higher_is_better) else "NOT REPRODUCED"


def _truths(means: np.ndarray, low: np.ndarray, high: np.ndarray, higher_is_better) -> np.ndarray:
    """`truth` element-wise."""
    beyond = "NOT REPRODUCED" if higher_is_better is None else ("BETTER" if higher_is_better else "NOT REPRODUCED")
    short = "NOT REPRODUCED" if higher_is_better is None else ("NOT REPRODUCED" if higher_is_better else "BETTER")
    return np.where((low < means) & (means < high), "REPRODUCED", np.where(means >= high, beyond, short))


def true_means(scenario: str, values: np.ndarray, sd: float, replicates: int, rng, worse_sign: float):
    """(true means, kinds): one row per reproduction; kinds name each cell's part of the mixture ('at', 'worse',
    'spread'; 'at' for every cell of scenario at, '' otherwise)."""
    shape = (replicates, len(values))
    if scenario == "mix":
        kinds = [k for k, share in MIXTURE for _ in range(round(share * len(values)))]
        kinds = np.array((kinds + ["at"] * len(values))[: len(values)])
        kinds = np.stack([rng.permutation(kinds) for _ in range(replicates)])
        offsets = np.where(
            kinds == "worse",
            worse_sign * WORSE_BY,
            np.where(kinds == "spread", rng.uniform(-SPREAD, SPREAD, shape), 0.0),
        )
        return values + offsets, kinds
    if scenario == "at":
        return np.broadcast_to(values, shape).copy(), np.full(shape, "at")
    if scenario == "normal":
        return values + rng.normal(0.0, sd, shape), np.full(shape, "")
    off = float(scenario.split("-", 1)[1])
    return values + off * rng.choice([-1.0, 1.0], shape), np.full(shape, "")


def simulate(
    seeds: int,
    sd: float,
    replicates: int = 200,
    paper: str = "ma",
    metric: str = "test_accuracy",
    correction: str | None = None,
    rng_seed: int = 0,
    scenario: str = "mix",
) -> dict:
    """The rates above for one (seeds, sd, scenario), with the correction of bench/tolerances.yaml unless one is
    named."""
    claims = paper_cells(paper, metric)
    method, alpha = correction or vd.correction(), vd.tolerances()["alpha"]
    hib = HIGHER_IS_BETTER[metric]
    rng = np.random.default_rng(rng_seed)
    values = np.array([c.value for c in claims])
    bands = np.array([vd.band(c) for c in claims])
    low, high = bands[:, 0], bands[:, 1]
    means, kinds = true_means(check_scenario(scenario), values, sd, replicates, rng, -1.0 if hib else 1.0)
    draws = rng.normal(means[..., None], sd, means.shape + (seeds,))
    verdicts = judge_rows(draws, low, high, hib, alpha, method)
    decided = verdicts != "INCONCLUSIVE"
    wrong = decided & (verdicts != _truths(means, low, high, hib))
    at, worse = kinds == "at", kinds == "worse"
    return {
        "seeds": seeds,
        "sd": sd,
        "scenario": scenario,
        "cells": len(claims),
        "replicates": replicates,
        "correction": method,
        "right": float(np.mean(decided & ~wrong)),
        "p_reproduced_at": float(np.mean(verdicts[at] == "REPRODUCED")) if at.any() else math.nan,
        "p_not_reproduced_worse": float(np.mean(verdicts[worse] == "NOT REPRODUCED")) if worse.any() else math.nan,
        "wrong_share": float(np.mean(wrong.sum(axis=1) / np.maximum(decided.sum(axis=1), 1))),
        "any_wrong": float(np.mean(wrong.any(axis=1))),
        "decided_share": float(np.mean(decided)),
    }


def judge_rows(draws: np.ndarray, low, high, higher_is_better, alpha: float, method: str) -> np.ndarray:
    """The verdicts of simulated cells, one paper per row (draws: reproductions x cells x seeds), as
    bench/verdicts/cells.judge gives them for cells with two or more distinct finite seed values."""
    n = draws.shape[-1]
    side, p = vd.decide(vd.band_tests(draws.mean(axis=-1), draws.std(axis=-1, ddof=1), n, low, high))
    adjusted = stats.adjust_rows(p, method)
    outcome = {s: vd._outcome(s, higher_is_better) for s in vd.SIDES}
    named = np.select([side == s for s in vd.SIDES], [outcome[s] for s in vd.SIDES], "")
    return np.where(adjusted < alpha, named, "INCONCLUSIVE")


def table(seed_counts: list[int], sds: list[float], scenarios=("mix",), **kw) -> list[dict]:
    return [simulate(n, sd, scenario=sc, **kw) for n in seed_counts for sd in sds for sc in scenarios]


def recommend(rows: list[dict], target: float = 0.8) -> dict:
    """sd -> the fewest seeds of the table at which every scenario of the table gives the right verdict to at least
    `target` of the cells (None where no seed count of the table does)."""
    out = {}
    for sd in dict.fromkeys(r["sd"] for r in rows):
        mine = [r for r in rows if r["sd"] == sd]
        counts = sorted({r["seeds"] for r in mine})
        out[sd] = next((n for n in counts if all(r["right"] >= target for r in mine if r["seeds"] == n)), None)
    return out


def _rate(x: float, digits: int = 2) -> str:
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def _preamble(rows: list[dict]) -> str:
    first = rows[0]
    return (
        f"{first['cells']} cells of one paper, {first['replicates']} simulated reproductions per row, correction "
        f"{first['correction']}; scenarios: at = every cell at its printed value, off-X = X points off it, "
        f"normal = off by N(0, sd), mix = {', '.join(f'{k} {s:g}' for k, s in MIXTURE)} "
        f"(worse = {WORSE_BY:g} points worse, spread = uniform within {SPREAD:g} points)\n"
    )


def describe(rows: list[dict]) -> str:
    """The table: one row per (seeds, sd, scenario) for one scenario; for several, one row per (seeds, sd) with the
    share of right verdicts in each scenario and the worst wrong share and any-wrong rate among them."""
    from tabulate import tabulate

    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    if len(scenarios) == 1:
        body = [
            [
                r["seeds"],
                f"{r['sd']:g}",
                r["scenario"],
                _rate(r["right"]),
                _rate(r["p_reproduced_at"]),
                _rate(r["p_not_reproduced_worse"]),
                _rate(r["decided_share"]),
                _rate(r["wrong_share"], 3),
                _rate(r["any_wrong"]),
            ]
            for r in rows
        ]
        return _preamble(rows) + tabulate(
            body,
            headers=[
                "seeds",
                "sd (points)",
                "scenario",
                "right",
                "P(REP), at printed",
                f"P(NOT REP), {WORSE_BY:g} worse",
                "decided",
                "wrong share (FDR)",
                "any wrong (FWER)",
            ],
            tablefmt="github",
            disable_numparse=True,
        )
    body = []
    for key in dict.fromkeys((r["seeds"], r["sd"]) for r in rows):
        mine = {r["scenario"]: r for r in rows if (r["seeds"], r["sd"]) == key}
        worse = [r["p_not_reproduced_worse"] for r in mine.values() if not math.isnan(r["p_not_reproduced_worse"])]
        body.append(
            [key[0], f"{key[1]:g}"]
            + [_rate(mine[s]["right"]) if s in mine else "–" for s in scenarios]
            + [
                _rate(worse[0]) if worse else "–",
                _rate(max(r["wrong_share"] for r in mine.values()), 3),
                _rate(max(r["any_wrong"] for r in mine.values())),
            ]
        )
    return (
        _preamble(rows)
        + "right: the share of cells given the right verdict in each scenario\n"
        + tabulate(
            body,
            headers=["seeds", "sd (points)"]
            + [f"right, {s}" for s in scenarios]
            + [f"P(NOT REP), {WORSE_BY:g} worse", "wrong share (FDR), worst", "any wrong (FWER), worst"],
            tablefmt="github",
            disable_numparse=True,
        )
    )
