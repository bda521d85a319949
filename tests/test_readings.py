"""Issue 29: a headline claim is judged under every reading its cells have (bench/verdicts/readings.py), and the
companion table puts each fork beside its primary with the difference against the tolerance."""

import csv
import math

from helpers import result_file

from bench import experiments as ex
from bench.run.results import run_path, write_json_atomic
from bench.verdicts import aggregate as agg
from bench.verdicts import readings as rd

CNN = "bhyravabhottla-{}-cnn12-{}"


def fake_run(results, experiment, seed, accuracy, status="FINISHED"):
    metrics = {"test_accuracy": accuracy, "train_time_s": 60.0, "peak_memory_mb": 900.0, "host_rss_after_mb": 1000.0}
    extra = {"error": "diverged at epoch 1: train_loss nan"} if status == "DIVERGED" else {}
    write_json_atomic(
        run_path("paper", experiment, seed, results),
        result_file("paper", experiment, seed, status, metrics=metrics, **extra),
    )


def test_readings_chain_companions_and_leave_out_other_comparisons():
    r = rd.readings("paper")
    base = ex.get(CNN.format("cifar100", "layer_to_layer"))
    labels = [x.label for x in r.of([base])]
    # the dataset of the notebook, the text's epochs, and both together; the equal-epoch baseline (another
    # method) is not a reading of the layer-to-layer run
    assert labels == ["primary", "dataset=cifar10", "variant=epochs300", "dataset=cifar10 + variant=epochs300"]
    both = r.of([base])[3]
    assert r.apply(both, base).id == CNN.format("cifar10", "layer_to_layer-epochs300")
    assert r.apply(r.of([base])[2], base).id == CNN.format("cifar100", "layer_to_layer-epochs300")
    other = ex.get("bhyravabhottla-cifar100-densenet-backprop")  # no epochs300 companion: stays where it can
    assert r.apply(both, other).id == "bhyravabhottla-cifar10-densenet-backprop"
    assert r.basis(both) == "code" and r.basis(r.of([base])[2]) == "text" and r.basis(rd.Reading()) == "primary"
    # a profile runs only the readings its companions run in
    assert [x.label for x in rd.readings("smoke").of([base])] == ["primary", "dataset=cifar10"]


def test_summary_counts_the_readings_a_claim_holds_under():
    p, t, c = rd.Reading(), rd.Reading(("variant=epochs300",)), rd.Reading(("dataset=cifar10",))
    text, under, note = rd.summary(
        [(p, "primary", "NOT SIGNIFICANT", 0, 2), (t, "text", "REVERSED", 2, 2), (c, "code", "HOLDS", 2, 2)]
    )
    assert under == "1 of 3 (dataset=cifar10)"
    assert "variant=epochs300 [text, 2 of 2 cells]: REVERSED" in text and text.startswith("primary [primary]:")
    assert note == "holds only under readings the text does not state (dataset=cifar10: code)"
    assert rd.summary([(p, "primary", "HOLDS", 0, 2), (c, "code", "HOLDS", 2, 2)])[2] == ""


def test_a_headline_claim_is_judged_under_each_reading(tmp_path):
    """h1 (layer-to-layer beats standard on the 12-layer CNN): reversed on the primary's runs, holds on the text's
    300 epochs; the companion table puts the fork's accuracy beside the primary's."""
    res = tmp_path / "results"
    runs = {
        ("cifar100", "backprop"): 80.0,
        ("cifar100", "layer_to_layer"): 70.0,
        ("cifar100", "backprop-epochs300"): 60.0,
        ("cifar100", "layer_to_layer-epochs300"): 75.0,
    }
    for (data, method), acc in runs.items():
        for seed in range(3):
            fake_run(res, CNN.format(data, method), seed, accuracy=acc + 0.1 * seed * (1 + (acc > 72)))
    for seed in range(3):  # the notebook's dataset: runs that diverged
        fake_run(res, CNN.format("cifar10", "layer_to_layer"), seed, accuracy=math.nan, status="DIVERGED")
    agg.aggregate("paper", results=res)
    heads = {r["id"]: r for r in csv.DictReader(open(res / "paper" / "headlines.csv", encoding="utf-8"))}
    h1 = heads["bhyravabhottla.h1"]
    assert h1["test"] == "REVERSED"
    assert "primary [primary]: REVERSED" in h1["readings"]
    assert "variant=epochs300 [text, 2 of 2 cells]: HOLDS" in h1["readings"]
    assert "dataset=cifar10 [code, 2 of 2 cells]: DIVERGED" in h1["readings"]
    assert h1["holds_under"] == "1 of 4 (variant=epochs300)" and h1["readings_note"] == ""
    comps = {r["experiment"]: r for r in csv.DictReader(open(res / "paper" / "companions.csv", encoding="utf-8"))}
    row = comps[CNN.format("cifar100", "layer_to_layer-epochs300")]
    assert row["reading"] == "variant=epochs300" and row["basis"] == "text"
    assert abs(float(row["diff_test_accuracy"]) - 5.0) < 0.2 and row["exceeds_tolerance"] == "yes"
    assert comps[CNN.format("cifar10", "layer_to_layer-epochs300")]["exceeds_tolerance"] == ""
