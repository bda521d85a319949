"""Result files are checked before they count (bench.run.results): a foreign, stale, mismatched, malformed or
out-of-range file never reaches a reproduced value; its cells read INVALID with the reason, and aggregate stops."""

import csv
import json
import math

import pytest
from helpers import measurement_file, result_file

from bench import BenchError
from bench.run import results as rf
from bench.run.results import run_path
from bench.verdicts import aggregate as agg

EID = "ma-cifar100-vgg8-backprop"


def rows_of(res, eid=EID, profile="paper"):
    with pytest.raises(BenchError, match=r"invalid result file\(s\), used nowhere") as err:
        agg.aggregate(profile, results=res, seeds="0")
    with open(res / profile / "cells.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["experiment"] == eid]
    assert rows
    return rows, str(err.value)


def plant(res, content, eid=EID, profile="paper", seed=0):
    path = run_path(profile, eid, seed, res)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def good(**changes):
    r = result_file("paper", EID, metrics={"test_accuracy": 70.0, "train_time_s": 10.0, "peak_memory_mb": 5.0})
    r.update(changes)
    return r


def stale_config():
    r = good()
    r["config"] = {**r["config"], "epochs": r["config"]["epochs"] + 1}
    return r


KINDS = {
    "foreign profile (a smoke file copied into paper)": (lambda: {**good(), "profile": "smoke"}, "profile 'smoke'"),
    "another experiment's file": (lambda: {**good(), "experiment": "ma-cifar100-vgg8-predsim"}, "experiment"),
    "seed 5 inside seed0.json": (lambda: {**good(), "seed": 5}, "seed 5"),
    "stale config": (stale_config, "stale: trained under another config for this experiment and profile (epochs"),
    "accuracy 1e6": (lambda: good(metrics={"test_accuracy": 1e6}), "outside 0-100"),
    "NaN accuracy": (lambda: good(metrics={"test_accuracy": math.nan}), "is nan"),
    "string accuracy": (lambda: good(metrics={"test_accuracy": "high"}), "not a number"),
    "negative time": (lambda: good(metrics={"test_accuracy": 70.0, "train_time_s": -3.0}), "below zero"),
    "no metrics": (lambda: {k: v for k, v in good().items() if k != "metrics"}, "has no 'metrics'"),
    "a list": (lambda: [1, 2], "JSON list, not an object"),
    "truncated JSON": (lambda: json.dumps(good())[:40], "not valid JSON"),
    "empty file": (lambda: "", "empty or truncated"),
    "unknown status": (lambda: good(status="DONE"), "status 'DONE'"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_bad_result_file_never_reaches_a_value(tmp_path, kind):
    make, reason = KINDS[kind]
    path = plant(tmp_path, make())
    rows, message = rows_of(tmp_path)
    for r in rows:
        assert r["status"] == "INVALID" and r["verdict"] == "FAILED" and r["mean"] == "" and r["n"] == "0"
        assert str(path) in r["reason"] and reason in r["reason"], r["reason"]
    assert str(path) in message and reason in message
    # skipped on request: written without the file, which still counts for nothing
    agg.aggregate("paper", results=tmp_path, seeds="0", skip_invalid=True)
    with open(tmp_path / "paper" / "cells.csv", newline="", encoding="utf-8") as f:
        assert all(r["status"] == "INVALID" for r in csv.DictReader(f) if r["experiment"] == EID)


def test_a_valid_file_counts(tmp_path):
    plant(tmp_path, good())
    agg.aggregate("paper", results=tmp_path, seeds="0")
    with open(tmp_path / "paper" / "cells.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["experiment"] == EID]
    assert rows and all(r["status"] == "MEASURED" and float(r["mean"]) == 70.0 for r in rows)


def test_provenance_text_alone_does_not_make_a_file_stale(tmp_path):
    r = good()
    r["config"] = {**r["config"], "sources": {"lr": "an older wording"}}
    assert rf.validate(r, "paper", EID, 0, result_file("paper", EID)["config"]) is r


def test_an_invalid_companion_reads_invalid(tmp_path):
    eid = "bhyravabhottla-cifar10-cnn12-backprop-equal_epochs"
    plant(tmp_path, {**result_file("paper", eid), "seed": 3}, eid=eid)
    with pytest.raises(BenchError):
        agg.aggregate("paper", results=tmp_path, seeds="0")
    with open(tmp_path / "paper" / "companions.csv", newline="", encoding="utf-8") as f:
        assert {r["experiment"]: r["status"] for r in csv.DictReader(f)}[eid] == "INVALID"


def test_reports_and_the_planner_never_read_an_invalid_file(tmp_path):
    plant(tmp_path, {**good(), "profile": "smoke"})
    invalid = {}
    assert rf.load_results("paper", [0], tmp_path, invalid) == {}
    assert list(invalid) == [(EID, 0)]


def test_a_finished_run_with_non_finite_metrics_is_not_finished():
    with pytest.raises(rf.Invalid, match="metrics.test_loss is inf"):
        rf.check_metrics({"test_accuracy": 50.0, "test_loss": math.inf})
    rf.check_metrics({"test_accuracy": 50.0, "si_input": None, "flops_counting": "ptflops"})


MID = "bhyravabhottla-cnn12"  # measured under one convention; its cells are parameter counts


def measurement(**changes):
    return {**measurement_file("bhyravabhottla", "cnn12"), **changes}


def negative_params():
    m = measurement()
    m["conventions"][0]["params_total"] = -1
    return m


MEASUREMENT_KINDS = {
    "another model's file": (lambda: measurement(id="cruciata-vgg11"), "holds id 'cruciata-vgg11'"),
    "stale conventions": (lambda: measurement(conventions=[]), "stale: measured under conventions []"),
    "stale primary": (lambda: measurement(primary={"convention": "cifar", "backend": "aten"}), "stale: primary"),
    "negative count": (negative_params, "params_total is -1"),
    "a part the cells ask for missing": (
        lambda: measurement(conventions=[{**measurement()["conventions"][0], "params_parts": {"x": 1}}]),
        "counts no parameters for conv1",
    ),
    "truncated JSON": (lambda: json.dumps(measurement())[:30], "not valid JSON"),
}


@pytest.mark.parametrize("kind", list(MEASUREMENT_KINDS))
def test_a_bad_measurement_file_never_reaches_a_value(tmp_path, kind):
    from bench.run import deterministic as det

    make, reason = MEASUREMENT_KINDS[kind]
    path = det.result_path("smoke", MID, tmp_path)
    path.parent.mkdir(parents=True)
    content = make()
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    with pytest.raises(BenchError, match="invalid result file") as err:
        agg.aggregate("smoke", results=tmp_path, seeds="0")
    assert reason in str(err.value)
    with open(tmp_path / "smoke" / "cells.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["paper"] == "bhyravabhottla" and r["metric"] == "params"]
    assert rows and all(r["status"] == "INVALID" and r["mean"] == "" and reason in r["reason"] for r in rows)


def test_a_valid_measurement_file_counts(tmp_path):
    from bench.run import deterministic as det

    path = det.result_path("smoke", MID, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(measurement()), encoding="utf-8")
    agg.aggregate("smoke", results=tmp_path, seeds="0")
    with open(tmp_path / "smoke" / "cells.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["paper"] == "bhyravabhottla" and r["metric"] == "params"]
    assert rows and all(r["status"] == "MEASURED" for r in rows)
