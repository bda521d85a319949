"""Implied epochs (bench.cost.implied_epochs, listed by `bench audit`): a printed training time read backwards
through the cost model; linear in the printed time and the rate, a line for every printed time the audit can calibrate,
a skip line for a cell without a cost model, and Bhyravabhottla's epochs per model as that evidence decides them."""

import json
import re

import pytest
from conftest import REPO

from bench import cli
from bench import experiments as ex
from bench.claims import registry
from bench.claims.registry import Claim
from bench.cost import implied_epochs as implied
from bench.report import audit as audit_report

CALIBRATION = {
    "source": "printed",
    "rate": 1e9,
    "rate_q1": 5e8,
    "rate_q3": 2e9,
    "rate_min": 2.5e8,
    "rate_max": 4e9,
    "cells": [],
    "hardware": ["a GPU"],
    "gpu": ["GPU X"],
}


def time_cell(
    id="p.t",
    printed="200",
    value=None,
    unit="s",
    paper="bhyravabhottla",
    model="cnn12",
    method="backprop",
    dataset="cifar10",
):
    value = float(printed) if value is None else value
    return Claim(
        id, paper, "1", "r", "c", dataset, model, method, "", "", "train_time", printed, value, unit, "", "", ""
    )


@pytest.fixture
def fixed_cost(monkeypatch):
    """A job of 1e12 forward-MAC units and 10 epochs, whatever the experiment."""
    cost = {"units": 1e12, "epochs": 10, "stage_epochs": [10], "batches": 0}
    monkeypatch.setattr(implied, "job_cost", lambda exp, profile: dict(cost))
    return cost


def test_implied_epochs_by_hand(fixed_cost):
    # 1e12 units at 1e9 units/s: 1,000 s predicted for 10 epochs; 200 s printed -> 2 epochs; at the quartile rates
    # (half and twice the median) 1 and 4, at the extremes 0.5 and 8
    [row] = implied.implied_epochs([time_cell(printed="200")], CALIBRATION)
    assert row["predicted_s"] == pytest.approx(1000.0)
    assert row["epochs"] == 10 and row["printed_s"] == 200.0
    assert (row["implied"], row["implied_q1"], row["implied_q3"]) == pytest.approx((2.0, 1.0, 4.0))
    assert (row["implied_min"], row["implied_max"]) == pytest.approx((0.5, 8.0))
    # linear in the printed time
    [twice] = implied.implied_epochs([time_cell(printed="400")], CALIBRATION)
    assert twice["implied"] == pytest.approx(4.0) and twice["implied_q3"] == pytest.approx(8.0)
    # a printed time in minutes is read in seconds: 1:40 min = 100 s -> 1 epoch
    [minutes] = implied.implied_epochs([time_cell(printed="1:40", value=1 + 40 / 60, unit="min")], CALIBRATION)
    assert minutes["printed_s"] == pytest.approx(100.0) and minutes["implied"] == pytest.approx(1.0)
    # a rate twice as fast gets through twice the epochs in the same printed time
    faster = {**CALIBRATION, **{k: 2 * v for k, v in CALIBRATION.items() if k.startswith("rate")}}
    [fast] = implied.implied_epochs([time_cell(printed="200")], faster)
    assert fast["implied"] == pytest.approx(4.0) and fast["implied_q1"] == pytest.approx(2.0)
    # the median rate the calibration gives is the one used (a monkeypatched calibration, the default path)
    implied._implied_default.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(implied, "printed_calibration", lambda: faster)
            mp.setattr(registry, "load_claims", lambda: [time_cell(printed="200")])
            [default] = implied.implied_epochs()
        assert default["implied"] == pytest.approx(4.0)
    finally:
        implied._implied_default.cache_clear()


def test_implied_epochs_of_a_real_cell_from_its_units(monkeypatch):
    """The real cost model: configured epochs x printed seconds x rate / the job's units."""
    monkeypatch.setattr(implied, "printed_calibration", lambda: CALIBRATION)
    cell = next(c for c in registry.load_claims() if c.id == "bhyravabhottla.1.standard-cnn.standard.time")
    [row] = implied.implied_epochs([cell])
    cost = implied.job_cost(ex.Experiment(*cell.experiment_key()), "paper")
    assert row["implied"] == pytest.approx(cost["epochs"] * cell.value * 1e9 / cost["units"])
    assert row["implied_q1"] == pytest.approx(row["implied"] / 2)


def test_a_staged_runs_configured_epochs_are_all_its_stages():
    """layer_to_layer without `stages`: half the model's Keras layers, each of epochs_per_stage epochs."""
    from bench.methods.layer_to_layer import keras_layers
    from bench.models import build_model

    exp = ex.get("bhyravabhottla-cifar10-cnn12-layer_to_layer")
    cfg = ex.config(exp, "paper")
    stages = len(keras_layers(build_model(cfg["architecture"], 3, 10, 32, cfg["model"]))) // 2
    cost = implied.job_cost(exp, "paper")
    per = cfg["method_options"]["epochs_per_stage"]
    assert stages == 6 and cost["stage_epochs"] == [per] * stages and cost["epochs"] == stages * per
    line = audit_report.implied_epochs_findings(
        [{**implied.implied_epochs([time_cell(method="layer_to_layer")], CALIBRATION)[0], "claim": "x"}], CALIBRATION
    )["bhyravabhottla"][0]
    assert f"of the configured {stages * per} epochs ({stages} stages of {per}, all stages together)" in line


def test_a_cell_without_a_cost_model_is_a_skip_line_not_a_crash():
    cells = [
        time_cell("p.none", method="dropout"),  # no cost model for this method
        time_cell("p.nogrid", paper="nopaper"),  # no grid for this paper
        time_cell("p.fine", printed="100"),
    ]
    rows = implied.implied_epochs(cells, CALIBRATION)
    assert [r["claim"] for r in rows] == ["p.none", "p.nogrid", "p.fine"]
    assert "no cost model" in rows[0]["skipped"] and "no experiment grid" in rows[1]["skipped"]
    assert "skipped" not in rows[2] and rows[2]["implied"] > 0
    lines = audit_report.implied_epochs_findings(rows, CALIBRATION)
    assert lines["bhyravabhottla"][0] == (
        "IMPLIED p.none: printed 200 s: no implied epochs, bench plan has no cost model for method 'dropout'"
    )
    assert lines["nopaper"][0].startswith("IMPLIED p.nogrid: printed 200 s: no implied epochs, no experiment grid")
    assert lines["bhyravabhottla"][1].startswith("IMPLIED p.fine: printed 100 s implies ")


def test_the_audit_lists_every_printed_training_time(tmp_path, monkeypatch, capsys):
    times = [c for c in registry.load_claims() if c.metric == "train_time" and not c.derived_from]
    rows = implied.implied_epochs()
    calibrable = {r["claim"] for r in rows if "skipped" not in r}
    assert {r["claim"] for r in rows} == {c.id for c in times} and calibrable
    lines = audit_report.implied_epochs_findings()
    flat = [line for paper in lines.values() for line in paper]
    assert len(flat) == len(times)
    for c in times:
        [line] = [f for f in lines[c.paper] if f.startswith(f"IMPLIED {c.id}: ")]
        assert (" implies " in line) == (c.id in calibrable), line
    # the GPU the rate is calibrated on: stated by the calibration's paper, assumed for the others
    meta = registry.papers()
    for c in times:
        [line] = [f for f in lines[c.paper] if f.startswith(f"IMPLIED {c.id}: ")]
        if meta[c.paper].get("hardware_match"):
            assert "on the stated RTX 3090" in line, line
        else:
            assert "assuming a GPU like the calibration's RTX 3090 (the paper states none)" in line, line
    # the report has them, per paper, and `bench audit` prints them
    text = audit_report.write_audit(tmp_path / "audit.md").read_text()
    for paper, items in lines.items():
        section = text.split(f"## {paper}: ")[1].split("\n## ")[0]
        assert f"Implied epochs of the {len(items)} printed training times:" in section
        assert all(f"- {item}" in section for item in items)
    assert f"{len(times)} printed training times with their implied epochs." in text
    monkeypatch.delenv("BENCH_WORKER", raising=False)
    assert cli.main(["audit", "--out", str(tmp_path / "cli.md")]) == 0
    out = capsys.readouterr().out
    assert sum(" IMPLIED " in line for line in out.splitlines()) == len(times)


def _implied(claim_id: str) -> dict:
    return next(r for r in implied.implied_epochs() if r["claim"] == claim_id)


def _within_extremes(epochs: int, row: dict) -> bool:
    return row["implied_min"] <= epochs <= row["implied_max"]


@pytest.mark.parametrize(
    "model, label", [("cnn12", "standard-cnn"), ("vgg16", "vgg16"), ("densenet", "densenet"), ("resnext", "resnext")]
)
def test_bhyravabhottlas_epochs_are_the_ones_the_printed_times_imply(model, label):
    """Each model's epochs (10, the notebook's, or 300, the paper's) lie within the range its printed standard time
    implies at the calibration's extreme rates, and the other count does not; the layer-to-layer stages have the
    same epochs each (stage 0 is the standard run). ResNeXt's layer-to-layer time fits no per-stage count that its
    standard time allows (the grid says so); the others' fit theirs."""
    chosen = ex.config(ex.Experiment("bhyravabhottla", "cifar100", model, "backprop"), "paper")["epochs"]
    assert chosen in (10, 300)
    other = 310 - chosen
    standard = _implied(f"bhyravabhottla.1.{label}.standard.time")
    assert _within_extremes(chosen, standard) and not _within_extremes(other, standard), standard
    staged = ex.config(ex.Experiment("bhyravabhottla", "cifar100", model, "layer_to_layer"), "paper")
    assert staged["method_options"]["epochs_per_stage"] == chosen
    l2l = _implied(f"bhyravabhottla.1.{label}.layer-to-layer.time")
    stages = len(l2l["stage_epochs"])
    assert l2l["epochs"] == stages * chosen
    if model != "resnext":
        assert _within_extremes(stages * chosen, l2l) and not _within_extremes(stages * other, l2l), l2l
    else:
        assert not _within_extremes(stages * chosen, l2l), "ResNeXt's layer-to-layer time now fits: revise the grid"


def test_bench_config_shows_the_epochs_and_their_evidence(monkeypatch, capsys):
    monkeypatch.delenv("BENCH_WORKER", raising=False)
    for eid, epochs, source in [
        ("bhyravabhottla-cifar100-densenet-backprop", 300, "paper Sec. 4"),
        ("bhyravabhottla-cifar10-resnext-layer_to_layer", 300, "paper Sec. 4"),
        ("bhyravabhottla-cifar100-cnn12-backprop", 10, "code:"),
        ("bhyravabhottla-cifar10-vgg16-layer_to_layer", 10, "code:"),
    ]:
        assert cli.main(["config", eid, "--format", "json"]) == 0
        cfg = json.loads(capsys.readouterr().out)
        assert cfg["epochs"] == epochs, eid
        assert cfg["sources"]["epochs"].startswith(source) and "imply" in cfg["sources"]["epochs"], eid
        if cfg["method"] == "layer_to_layer":
            assert cfg["method_options"]["epochs_per_stage"] == epochs
            assert cfg["sources"]["method_options.epochs_per_stage"].startswith(source), eid
            assert "imply" in cfg["sources"]["method_options.epochs_per_stage"], eid


def test_a_second_call_is_served_from_the_cache(monkeypatch):
    first = implied.implied_epochs()

    def no_cost(exp, profile):
        raise AssertionError("recomputed")

    monkeypatch.setattr(implied, "job_cost", no_cost)
    assert implied.implied_epochs() == first
    row = next(i for i, r in enumerate(first) if "implied" in r)
    first[row]["implied"] = -1.0  # a caller's edit does not reach the cache
    assert implied.implied_epochs()[row]["implied"] != -1.0


QUOTE = re.compile(
    r"([\d.,]*\d)(?: epochs)?(?: for [\w\- ]+?)? \(q1-q3 ([\d.,]*\d)-([\d.,]*\d); "
    r"extremes ([\d.,]*\d)-([\d.,]*\d)\)"
)


def as_quoted(value: float) -> str:
    """A number as the grids quote it: thousands separators, two significant digits below 10."""
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def test_the_grids_quote_the_implied_epochs_that_the_audit_computes():
    """Every implied-epochs quote in a grid's sources ("N epochs ... (q1-q3 A-B; extremes C-D)") is a row of `bench
    audit`'s implied epochs as computed today. A change to the cost model, the calibration or the registry that
    moves them fails here until the grid quotes the new numbers, and its reasoning is read against them."""
    computed = {
        tuple(as_quoted(r[k]) for k in ("implied", "implied_q1", "implied_q3", "implied_min", "implied_max"))
        for r in implied.implied_epochs()
        if "implied" in r
    }
    quotes = [
        m.groups() for grid in sorted((REPO / "bench/grids").glob("*.yaml")) for m in QUOTE.finditer(grid.read_text())
    ]
    assert len(quotes) >= 8  # Bhyravabhottla's standard and layer-to-layer times of its four models
    stale = [q for q in quotes if q not in computed]
    assert not stale, f"quoted implied epochs that `bench audit` does not compute: {stale}"
