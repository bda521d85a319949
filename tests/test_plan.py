"""`bench plan`: the cost model per method, a job's units by hand, the totals, and predicted vs measured."""
import pytest

from bench import experiments as ex
from bench.claims.datasets import DATASETS
from bench.cost import plan
from bench.run.targets import targets
from helpers import result_file


def test_schedules_per_method():
    cfg = {"epochs": 60, "method_options": {}}
    assert plan.schedule("backprop", cfg, 8) == [(60, 3.0)]
    assert plan.schedule("predsim", cfg, 8) == [(60, 3.3)]
    assert plan.schedule("learn_drop", cfg, 8) == [(60, 3.0)]
    # layer-wise with augmentation (prefix recomputed every batch): block i of 4 costs (i + 3) / 4 forward passes,
    # then the classifier stage
    aug = {"crop_padding": 4, "hflip": True}
    batch = {"epochs_per_layer": 10, "neighbours": "batch"}  # SI's partners within the batch: no extra passes
    si = plan.schedule("si_forward", {"epochs": 200, "augment": aug, "method_options": batch}, 4)
    assert si == [(10, 0.75), (10, 1.0), (10, 1.25), (10, 1.5), (10, 1.0)]
    assert plan.schedule("greedy_layerwise", {"epochs": 200, "augment": aug, "method_options": {"epochs_per_layer": 10}},
                         4) == si
    # without augmentation the prefix's features are cached: the prefix (i / 4) once per stage of 10 epochs
    cached = plan.schedule("si_forward", {"epochs": 200, "method_options": batch}, 4)
    assert cached == [(10, pytest.approx(0.75 + i / 40)) for i in range(4)] + [(10, 1.0)]
    uncached = {"epochs": 200, "method_options": {**batch, "cache_prefix": False}}
    assert plan.schedule("si_forward", uncached, 4) == si
    # partners over the data (the method's default): anchors and their two partners through block i (3 x 3/4) and,
    # uncached, the prefix (3 x i/4); the search: one forward of the set through prefix and block per stage of 10
    data = plan.schedule("si_forward", {"epochs": 200, "augment": aug, "method_options": {"epochs_per_layer": 10}}, 4)
    assert data == [(10, pytest.approx(2.25 + 0.75 * i + (1 + i) / 40)) for i in range(4)] + [(10, 1.0)]
    data_cached = plan.schedule("si_forward", {"epochs": 200, "method_options": {"epochs_per_layer": 10}}, 4)
    assert data_cached == [(10, pytest.approx(2.25 + i / 40 + 1 / 40)) for i in range(4)] + [(10, 1.0)]
    # the growing network: forward and backward through blocks 0..i
    grow = plan.schedule("si_forward", {"epochs": 200, "method_options": {**batch, "train_scope": "growing"}}, 4)
    assert grow == [(10, pytest.approx(0.75 * (i + 1))) for i in range(4)] + [(10, 1.0)]
    bel = plan.schedule("belilovsky_greedy", {"epochs": 1, "augment": aug, "method_options": {}}, 3)
    assert bel == [(50, 1.0), (50, pytest.approx(4 / 3)), (50, pytest.approx(5 / 3))]  # layerCNN's 50 epochs per block, no separate classifier
    fb = plan.schedule("fb_si", {"epochs": 200, "method_options": {"si_layers": 1, "epochs_per_layer": 10,
                                                                    "neighbours": "batch"}}, 5)
    assert fb == [(10, 0.6), (200, 3.0)]
    l2l = plan.schedule("layer_to_layer", {"epochs": 300, "method_options": {"epochs_per_stage": 10, "stages": 6}}, 12)
    assert l2l == [(10, 3.0)] * 6
    with pytest.raises(ValueError, match="no cost model"):
        plan.schedule("dropout", cfg, 1)


def test_a_jobs_units_by_hand():
    exp = ex.get("cruciata-cifar10-vgg11-backprop")
    cost = plan.job_cost(exp, "paper")
    cfg = ex.config(exp, "paper")
    info = DATASETS["cifar10"]
    # 60 epochs of 50,000 samples at 3 forward passes, plus 10,000 test samples evaluated after every epoch
    expected = cost["macs"] * (info.train_size * cfg["epochs"] * 3.0 + info.test_size * cfg["epochs"])
    assert cost["epochs"] == cfg["epochs"] == 60 and cost["units"] == expected
    # batches for the overhead term: every epoch's training batches (the last one short) and evaluation batches
    assert cost["batches"] == 60 * (-(-info.train_size // cfg["batch_size"]) + -(-info.test_size // 512))
    assert plan.predicted_seconds(cost, 1e12, 0.002) == pytest.approx(expected / 1e12 + cost["batches"] * 0.002)
    assert 1e8 < cost["macs"] < 1e9  # a CIFAR VGG-11 forward pass: about 153 MMACs


def test_plan_totals_and_compare(tmp_path, capsys):
    found = plan.plan("smoke", rate=1e9)  # a given rate: no probe, no overhead
    assert found["seeds"] == 1 and len(found["jobs"]) == len(targets("smoke"))
    assert found["overhead_s_per_batch"] == 0.0
    assert found["hours_total"] == pytest.approx(sum(j["units"] for j in found["jobs"]) / 1e9 / 3600)
    with_overhead = plan.plan("smoke", rate=1e9, overhead=0.01)
    assert with_overhead["hours_total"] == pytest.approx(
        sum(j["units"] / 1e9 + j["batches"] * 0.01 for j in found["jobs"]) / 3600)
    assert set(found["hours_per_paper"]) == {"ma", "karimi", "bhyravabhottla", "cruciata"}

    from bench.run.results import run_path, write_json_atomic

    eid = "ma-cifar10-vgg8-backprop"
    write_json_atomic(run_path("smoke", eid, 0, tmp_path), result_file(
        "smoke", eid, metrics={"test_accuracy": 50.0, "train_time_s": 1.0},
        epochs=[{"epoch_time_s": 0.4, "eval_time_s": 0.1}, {"epoch_time_s": 0.4, "eval_time_s": 0.1}]))
    rows = plan.compare("smoke", 1e9, tmp_path, overhead=0.01)
    assert [(r["experiment"], r["measured_s"]) for r in rows] == [(eid, pytest.approx(1.0))]
    cost = plan.job_cost(ex.get(eid), "smoke")
    assert rows[0]["predicted_s"] == pytest.approx(cost["units"] / 1e9 + cost["batches"] * 0.01)

    from bench.cli import main

    assert main(["plan", "--profile", "smoke", "--rate", "1e9"]) in (None, 0)
    out = capsys.readouterr().out
    assert "| all" in out and "calibrated on" in out and "1e+09" in out


def test_calibration_on_printed_times(capsys, monkeypatch):
    """Without a GPU, the GPU-hours come from the papers' printed times on the GPU they state: each backprop time
    cell gives units / printed seconds; the plan uses the median. Only papers with `hardware_match` count."""
    import statistics

    from bench.claims import registry

    rows = plan.printed_times("backprop")
    stated = {p for p, m in registry.papers().items() if m.get("hardware_match")}
    timed = [c for c in registry.load_claims() if c.metric == "train_time" and c.method == "backprop"]
    assert {c.paper for c in timed} - stated  # some paper prints times on hardware it does not state: left out
    assert [r["claim"] for r in rows] == [c.id for c in timed if c.paper in stated] and len(rows) >= 3
    # one cell by hand: its printed minutes and the paper profile's units of its experiment
    claim = next(c for c in timed if c.id == rows[0]["claim"])
    units = plan.job_cost(ex.Experiment(*claim.experiment_key()), "paper")["units"]
    assert rows[0]["rate"] == pytest.approx(units / (claim.value * 60 if claim.unit == "min" else claim.value))

    cal = plan.printed_calibration()
    assert cal["rate"] == pytest.approx(statistics.median(r["rate"] for r in rows))
    assert cal["rate_min"] <= cal["rate_q1"] <= cal["rate"] <= cal["rate_q3"] <= cal["rate_max"]
    found = plan.plan("smoke", calibrate="printed")
    assert found["calibration"]["source"] == "printed" and found["device_type"] == "printed"
    assert found["hours_total"] == pytest.approx(sum(j["units"] for j in found["jobs"]) / cal["rate"] / 3600)

    from bench.cli import main

    assert main(["plan", "--profile", "smoke", "--calibrate", "printed"]) in (None, 0)
    out = capsys.readouterr().out
    assert "GPU-hours" in out and f"{len(rows)} cells" in out and "middle half" in out
    assert main(["plan", "--calibrate", "printed", "--compare"]) in (None, 0)
    out = capsys.readouterr().out
    assert rows[0]["claim"] in out and "backprop: predicted / printed median 1.00" in out
    assert main(["plan", "--profile", "all", "--calibrate", "printed"]) in (None, 0)
    out = capsys.readouterr().out  # one column per profile, the same totals as one profile at a time
    assert all(f"{p} (" in out for p in ex.profiles()) and "| all" in out and "GPU-hours" in out
    assert f"{found['hours_total']:.3g}" in out

    from bench import BenchError

    unstated = {p: {k: v for k, v in m.items() if k != "hardware_match"} for p, m in registry.papers().items()}
    monkeypatch.setattr(plan.registry, "papers", lambda: unstated)
    with pytest.raises(BenchError, match="stated hardware"):
        plan.printed_calibration()


def test_the_overhead_probe_separates_per_batch_costs_from_macs():
    """A LeNet step costs more than its MACs at the VGG probe's rate; the difference is the per-batch overhead.
    At a rate so low that the MACs alone exceed the measured time, the overhead is clamped to 0."""
    import torch

    cpu = torch.device("cpu")
    rate = plan.probe("smoke", cpu, steps=2, rounds=1)
    overhead = plan.overhead_probe("smoke", cpu, rate, steps=5, rounds=1)
    assert 0.0 < overhead < 1.0  # this machine: a few ms per batch
    assert plan.overhead_probe("smoke", cpu, 1.0, steps=2, rounds=1) == 0.0
    assert plan.calibrate_device("smoke", cpu, rate=5.0) == (5.0, 0.0)
    assert plan.calibrate_device("smoke", cpu, rate=5.0, overhead=0.5) == (5.0, 0.5)
