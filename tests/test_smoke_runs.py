"""The tests' reuse of the smoke DAG's runs (conftest.SmokeRuns) trusts a result file only when it is valid for this
checkout: a file that `bench.run.results.load` refuses, a run that did not finish or was resumed, or one trained by
another code version is never used; the run is trained instead."""

import json

import pytest
from conftest import SmokeRuns
from helpers import result_file

from bench import experiments as ex
from bench.run.measure import code_version
from bench.run.results import run_path

EXPERIMENT = "cruciata-mnist-vgg11-backprop"


def write(results, **changes):
    result = result_file("smoke", EXPERIMENT, metrics={"test_accuracy": 42.0}, resumed_from_epoch=0)
    result["environment"]["code_version"] = code_version()
    for key, value in changes.items():
        if key == "code_version":
            result["environment"]["code_version"] = value
        elif key == "config":
            result["config"] = value
        else:
            result[key] = value
    path = run_path("smoke", EXPERIMENT, 0, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return path


@pytest.fixture
def runs(tmp_path, monkeypatch):
    found = SmokeRuns(tmp_path / "trained", tmp_path / "results")
    trained = []
    monkeypatch.setattr(found, "train", lambda e, s: trained.append((e, s)) or {"trained": True})
    found.trained = trained
    return found


def test_a_valid_result_of_this_checkout_is_reused(runs, tmp_path):
    path = write(tmp_path / "results")
    assert runs.get(EXPERIMENT)["metrics"]["test_accuracy"] == 42.0 and runs.source(EXPERIMENT) == str(path)
    assert runs.get(EXPERIMENT)["metrics"]["test_accuracy"] == 42.0 and runs.trained == []  # read once, kept


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"code_version": "0123456789ab"}, "code version 0123456789ab"),
        ({"status": "FAILED"}, "FAILED"),
        ({"resumed_from_epoch": 2}, "resumed from epoch 2"),
        ({"config": {**ex.config(ex.get(EXPERIMENT), "smoke"), "epochs": 99}}, "epochs"),
        ({"seed": 3}, "seed"),
    ],
)
def test_a_result_not_valid_for_this_checkout_is_trained_again(runs, tmp_path, change, reason):
    write(tmp_path / "results", **change)
    assert runs.get(EXPERIMENT) == {"trained": True} and runs.trained == [(EXPERIMENT, 0)]
    assert runs.source(EXPERIMENT).startswith("trained here") and reason in runs.source(EXPERIMENT)


def test_no_result_is_trained(runs):
    assert runs.get(EXPERIMENT, 1) == {"trained": True} and "absent" in runs.source(EXPERIMENT, 1)
