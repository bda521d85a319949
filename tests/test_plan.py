"""`bench plan`: the cost model per method, a job's units by hand, the totals, and predicted vs measured."""

import pytest
from helpers import result_file

from bench import experiments as ex
from bench.claims.datasets import DATASETS
from bench.cost import method_costs, plan, resources
from bench.methods.schedule import stage_epochs
from bench.run.targets import targets

W, P = method_costs.Work, method_costs.Part


def toy_parts(**extra) -> dict:
    """Four blocks and a head with round numbers: [forward MACs, forward seconds, forward + backward seconds]."""
    return {
        "total": 1111.0,
        "blocks": [[100, 1, 3], [200, 2, 5], [300, 3, 8], [400, 4, 9]],
        "head": [111, 1, 2],
        "out": [64, 32, 16, 8],
        "classes": 10,
        **extra,
    }


def test_stage_epochs_per_method():
    cfg = {"epochs": 60, "method_options": {}}
    for method in ("backprop", "predsim", "learn_drop", "freezing"):
        assert stage_epochs(method, cfg, 8) == [60]
    opts = {"epochs": 200, "method_options": {"epochs_per_layer": 10}}
    assert stage_epochs("si_forward", opts, 4) == [10] * 5  # four blocks, then the classifier
    assert stage_epochs("belilovsky_greedy", {"epochs": 1, "method_options": {}}, 3) == [50] * 3
    assert stage_epochs("fb_si", opts, 5) == [10, 200]
    l2l = {"epochs": 300, "method_options": {"epochs_per_stage": 10}}
    assert stage_epochs("layer_to_layer", l2l, 4, n_layers=12) == [10] * 6
    with pytest.raises(ValueError, match="no cost model"):
        stage_epochs("dropout", cfg, 1)


def test_phases_by_hand():
    """What each method computes per epoch, on toy parts (M: 1111 MACs, 11 s forward, 27 s trained)."""
    parts = toy_parts()
    cfg = {"epochs": 5, "method_options": {}}
    bp = method_costs.phases("backprop", cfg, parts, 1000, False)
    # trained: 3 forwards' MACs and the measured forward + backward seconds; evaluated: the forward
    assert [(p.epochs, p.train, p.evaluate) for p in bp] == [(5, W(3333, 27), W(1111, 11))]
    ps = method_costs.phases("predsim", cfg, toy_parts(aux=[[50, 1, 2]] * 4), 1000, False)
    assert ps[0].train == W(3 * 1311, 35)  # the model and every local unit's similarity conv + decoder

    # Learn & Drop / Freezing: the cuts' frozen prefixes (layer k = block k here) and the stored state after each
    cuts = {
        "cuts": [[0, 0, 0], [100, 1, 3], [300, 3, 8], [600, 6, 16], [1000, 10, 25]],
        "cut_state": [784, 64, 32, 16, 8],
    }
    drops = [(0, 0), (1, 0), (2, 2), (3, 2), (3, 2)]  # warm-up, scored, extraction of layers 0-1, two on stored maps
    ld = method_costs.phases("learn_drop", cfg, toy_parts(**cuts), 1000, False, drops)
    head = W(3 * 811, 19)  # what is left after the cut, trained: blocks 2, 3 and the head
    assert [p.train for p in ld] == [
        W(3333, 27),
        W(3333, 27),
        W(300, 3) + head + W(reads=32),  # the dropped layers once, their maps stored
        W(reads=32) + head,
        W(reads=32) + head,
    ]
    assert all(p.evaluate == W(1111, 11) for p in ld)  # the whole model is evaluated every epoch
    fr = method_costs.phases("freezing", cfg, toy_parts(**cuts), 1000, False, drops)
    assert fr[-1].train == W(300, 3) + head  # frozen: forward only, no backward
    assert method_costs.phases("freezing", cfg, toy_parts(**cuts), 1000, False)[0].train == W(3333, 27)  # no drops

    # layer-to-layer: 2 stages over 4 Keras layers: [0, 3] then [1, 2], layer 0 frozen (forward) and layer 3 frozen
    # but crossed by the gradient (forward + input gradient: 2 forwards' MACs, half the backward)
    layers = {"layers": [[100, 1, 3], [200, 2, 5], [300, 3, 8], [511, 5, 11]]}
    l2l = method_costs.phases(
        "layer_to_layer", {"epochs": 5, "method_options": {"epochs_per_stage": 3}}, toy_parts(**layers), 1000, False
    )
    assert [(p.epochs, p.train) for p in l2l] == [(3, W(3333, 27)), (3, W(100, 1) + W(1500, 13) + W(1022, 8))]


def test_predsim_sequential_phases_by_hand():
    """PredSim's schedule sequential on toy parts: 4 local-loss units (here the blocks) and the output layer (the
    head), 10 epochs over 5 stages. Stage j: the frozen units before it forward only, unit j and its similarity conv
    and decoder trained, nothing after it; the last stage: every unit forward, the output layer trained; the whole
    model evaluated every epoch. Every stage costs less per epoch than the simultaneous schedule's epoch."""
    parts = toy_parts(
        aux=[[50, 1, 2]] * 4, units=[[100, 1, 3], [200, 2, 5], [300, 3, 8], [400, 4, 9]], output=[111, 1, 2]
    )
    cfg = {"epochs": 10, "method_options": {"schedule": "sequential"}}
    assert stage_epochs("predsim", cfg, 4, n_units=4) == [2] * 5
    seq = method_costs.phases("predsim", cfg, parts, 1000, False)
    assert [p.epochs for p in seq] == [2] * 5
    assert [p.train for p in seq] == [
        W(3 * 150, 5),  # unit 0 + its aux trained, nothing before or after
        W(100, 1) + W(3 * 250, 7),  # unit 0 forward (frozen), unit 1 trained
        W(300, 3) + W(3 * 350, 10),
        W(600, 6) + W(3 * 450, 11),
        W(1000, 10) + W(333, 2),
    ]  # every unit forward, the output layer trained
    assert all(p.evaluate == W(1111, 11) for p in seq)
    sim = method_costs.phases("predsim", {"epochs": 10, "method_options": {}}, parts, 1000, False)
    assert [p.epochs for p in sim] == [10] and sim[0].train == W(3 * 1311, 35)
    for p in seq:
        assert p.train.macs < sim[0].train.macs and p.train.secs < sim[0].train.secs
    total = lambda phases: sum(p.work(1000, 200, 100, 512)["macs"] for p in phases)  # noqa: E731
    assert total(seq) < total(sim)


def test_predsim_sequential_units_of_a_real_model():
    """measure_parts' PredSim units and output layer partition the model (their MACs add up to ptflops' count); the
    sequential phases of Ma's 400 epochs: 8 stages of 50 on vgg8b (7 units), the early ones far cheaper per epoch
    than the simultaneous schedule, the output layer's stage a forward pass and a Linear's training."""
    from bench.run.measure import forward_macs

    exp = ex.get("ma-cifar10-vgg8b-predsim")
    cfg = ex.config(exp, "smoke")
    cfg = {
        **cfg,
        "epochs": 400,
        "lr_milestones": [200, 300, 356, 376],
        "method_options": {**cfg["method_options"], "schedule": "sequential"},
    }
    model = resources.config_model(cfg, exp.dataset)
    total = forward_macs(model, "pytorch")
    parts = method_costs.measure_parts(model, exp.method, cfg, total)
    assert len(parts["units"]) == len(parts["aux"]) == 7
    assert sum(u[0] for u in parts["units"]) + parts["output"][0] == pytest.approx(total)
    seq = method_costs.phases("predsim", cfg, parts, 50000, True)
    sim = method_costs.phases("predsim", {**cfg, "method_options": {"schedule": "simultaneous"}}, parts, 50000, True)
    assert [p.epochs for p in seq] == [50] * 8 and [p.epochs for p in sim] == [400]
    assert seq[0].train.macs < sim[0].train.macs / 4 and seq[1].train.macs < sim[0].train.macs / 2
    assert all(p.train.macs < sim[0].train.macs and p.evaluate == sim[0].evaluate for p in seq)
    assert seq[-1].train.macs == pytest.approx(total - parts["output"][0] + 3 * parts["output"][0])


def test_layerwise_phases_by_hand():
    parts = toy_parts()
    cfg = {"epochs": 5, "method_options": {"epochs_per_layer": 2, "neighbours": "batch", "si_eval_samples": 0}}
    si = method_costs.phases("si_forward", cfg, parts, 1000, augmented=False)
    assert [p.epochs for p in si] == [2, 2, 2, 2, 2]
    # block 2, cached: its prefix (blocks 0-1) once for the training and test sets, every batch reads its features
    assert si[2].train == W(900, 8, reads=32)
    assert si[2].once_train == W(300, 3) and si[2].evaluate == W()
    assert si[2].once_test == W(300, 3) + W(811, 8)  # the prefix, then the rest at the stage's last epoch
    assert si[-1].train == W(333, 2, reads=8)  # the classifier on the cached features
    # with augmentation the prefix runs every epoch (and the test features are still cached)
    aug = method_costs.phases("si_forward", cfg, parts, 1000, augmented=True)
    assert aug[2].train == W(900, 8) + W(300, 3) and aug[2].once_train == W()
    # partners over the data: the anchor and its two partners through the block, and a pair search per stage
    data = {"epochs": 5, "method_options": {"epochs_per_layer": 2, "si_eval_samples": 100}}
    pairs = method_costs.phases("si_forward", data, parts, 1000, augmented=False)
    assert pairs[2].train == 3 * W(900, 8, reads=32)
    assert pairs[2].once_train == W(300, 3) + W(300, 3)  # the prefix's cache, the search's pass through block 2
    assert pairs[2].once_fixed == W(pairs=1000**2, pair_dims=1000**2 * 16)  # N^2 pairs of D = 16
    assert pairs[2].epoch_fixed == W(100 * 300, 100 * 3, pairs=100**2, pair_dims=100**2 * 16)  # SI of 100
    greedy = method_costs.phases("greedy_layerwise", cfg, toy_parts(aux=[[160, 1, 1]] * 4), 1000, augmented=False)
    assert greedy[2].train == W(3 * 460, 9, reads=32)  # block 2 and its temporary head
    assert greedy[2].evaluate == W(460, 4, reads=32)
    bel = method_costs.phases("belilovsky_greedy", cfg, toy_parts(aux=[[1000, 9, 20]] * 4), 1000, False)
    assert len(bel) == 4 and bel[1].train == W(3 * 1200, 25, reads=64)
    fb = method_costs.phases(
        "fb_si", {**cfg, "method_options": {**cfg["method_options"], "si_layers": 1}}, parts, 1000, augmented=False
    )
    assert [p.epochs for p in fb] == [2, 5]
    assert fb[1].train == W(3 * 1011, 24, reads=64)  # blocks 1-3 and the head end to end
    # a phase's totals: per-sample terms x samples, fixed terms as they are, and its batches
    work = pairs[2].work(1000, 200, 100, 512)
    assert work["secs"] == 2 * (24 * 1000 + 300) + 6 * 1000 + (3 + 8) * 200
    assert work["pairs"] == 2 * 100**2 + 1000**2 and work["batches"] == 2 * (10 + 1) + 10 + 1


def test_a_prefix_cache_too_large_is_planned_as_recomputed():
    """A stage whose training features after its frozen prefix exceed prefix_cache_max_mb is not cached
    (bench.methods.layerwise.StageFeatures): the plan charges the prefix every batch, not once."""
    parts = toy_parts()  # features after block 0: 64 floats a sample (256,000 bytes for 1000), after block 1: 32
    opts = {"epochs_per_layer": 2, "neighbours": "batch", "si_eval_samples": 0}
    roomy = method_costs.phases("si_forward", {"epochs": 5, "method_options": opts}, parts, 1000, False)
    tight = method_costs.phases(
        "si_forward", {"epochs": 5, "method_options": {**opts, "prefix_cache_max_mb": 0.2}}, parts, 1000, False
    )  # 209,715 bytes: block 2's prefix features fit, block 1's not
    assert roomy[1].train == W(600, 5, reads=64) and roomy[1].once_train == W(100, 1)
    assert tight[1].train == W(600, 5) + W(100, 1) and tight[1].once_train == W()
    assert tight[2] == roomy[2]


def test_data_epoch_pair_search_is_charged_every_epoch():
    """neighbours data_epoch: the search of neighbours data (the set through the block, N^2 distances) in every
    epoch of an SI stage instead of once; the rest as data (the anchor and its two partners through the block)."""
    parts = toy_parts()
    opts = {"epochs_per_layer": 3, "si_eval_samples": 100}
    once = method_costs.phases("si_forward", {"epochs": 5, "method_options": opts}, parts, 1000, False)
    every = method_costs.phases(
        "si_forward", {"epochs": 5, "method_options": {**opts, "neighbours": "data_epoch"}}, parts, 1000, False
    )
    search = W(pairs=1000**2, pair_dims=1000**2 * 16)  # block 2: D = 16
    assert every[2].train == once[2].train + W(300, 3) == 3 * W(900, 8, reads=32) + W(300, 3)
    assert every[2].once_train == W(300, 3) and every[2].once_fixed == W()  # the prefix's cache only
    assert every[2].epoch_fixed == once[2].epoch_fixed + search
    assert every[-1] == once[-1]  # the classifier stage
    for i, (a, b) in enumerate(zip(every[:-1], once[:-1])):  # every SI stage: 2 more searches of its 3 epochs
        extra = 2 * (1000 * blocks_fwd(parts, i) + W(pairs=1000**2, pair_dims=1000**2 * parts["out"][i]))
        wa, wb = a.work(1000, 200, 100, 512), b.work(1000, 200, 100, 512)
        assert {k: wa[k] - wb[k] for k in method_costs.KEYS} == pytest.approx(
            dict(zip(method_costs.KEYS, method_costs.astuple(extra)))
        )


def blocks_fwd(parts: dict, i: int) -> W:
    macs, fwd, _ = parts["blocks"][i]
    return W(macs, fwd)


def test_measured_parts_of_real_models():
    """The blocks and the head add up to ptflops' count; Learn & Drop's cuts grow to the whole trunk;
    layer-to-layer's Keras layers partition the model; the methods' local heads cost something; timed on this CPU,
    the parts are the same and every part's times are positive and finite, its training (forward + backward) never
    below its forward (time_leaves keeps the larger per leaf: a rule of the code, not a race between two timings)."""
    import math

    import torch

    from bench.run.measure import forward_macs

    for eid in (
        "cruciata-cifar10-vgg11-learn_drop",
        "bhyravabhottla-cifar10-cnn12-layer_to_layer",
        "ma-cifar10-vgg8b-predsim",
        "karimi-cifar10-simcnn_k2-belilovsky_greedy",
    ):
        exp = ex.get(eid)
        cfg = ex.config(exp, "smoke")
        model = resources.config_model(cfg, exp.dataset)
        total = forward_macs(model, "pytorch")
        parts = method_costs.measure_parts(model, exp.method, cfg, total)
        blocks = sum(b[0] for b in parts["blocks"]) + parts["head"][0]
        assert blocks == pytest.approx(total) and len(parts["out"]) == len(model.blocks)
        assert all(b[1] == b[2] == 0 for b in parts["blocks"])  # untimed
        if exp.method == "learn_drop":
            macs = [c[0] for c in parts["cuts"]]
            assert macs == sorted(macs) and macs[-1] == pytest.approx(blocks - parts["head"][0])
            assert len(parts["cut_state"]) == len(parts["cuts"]) and parts["cut_state"][0] == 3 * 32 * 32
        if exp.method == "layer_to_layer":
            assert sum(x[0] for x in parts["layers"]) == pytest.approx(total) and len(parts["layers"]) == 12
        if "aux" in parts:
            assert len(parts["aux"]) >= len(model.blocks) and all(a[0] > 0 for a in parts["aux"])
        timed = method_costs.measure_parts(model, exp.method, cfg, total, torch.device("cpu"), batch=8)
        for part in timed["blocks"] + [timed["head"]] + timed.get("layers", []) + timed.get("aux", []):
            assert all(math.isfinite(t) and t > 0 for t in part[1:]) and part[1] <= part[2], part
        assert counts(timed) == counts(parts)  # timing changes no count: the same parts, MACs and sizes


def counts(parts: dict) -> dict:
    """measure_parts' answer without its seconds: every [MACs, forward s, training s] triple down to its MACs."""
    triples = ("blocks", "layers", "aux", "cuts", "units")
    return {k: [x[0] for x in v] if k in triples else v[0] if k in ("head", "output") else v for k, v in parts.items()}


def test_a_jobs_units_by_hand():
    exp = ex.get("cruciata-cifar10-vgg11-backprop")
    cost = plan.job_cost(exp, "paper")
    cfg = ex.config(exp, "paper")
    info = DATASETS["cifar10"]
    # 60 epochs of 50,000 samples at 3 forward passes, plus 10,000 test samples evaluated after every epoch
    expected = cost["macs"] * (info.train_size * cfg["epochs"] * 3.0 + info.test_size * cfg["epochs"])
    assert cost["epochs"] == cfg["epochs"] == 60 and cost["units"] == pytest.approx(expected)
    # every epoch's training batches (the last one short) and evaluation batches
    assert cost["batches"] == 60 * (-(-info.train_size // cfg["batch_size"]) + -(-info.test_size // 512))
    cal = plan.Calibration(1e12, per_read=1e-9, per_batch=1e-3)
    assert cost["secs"] == cost["reads"] == 0  # untimed, and backprop reads no cache
    assert cal.seconds(cost) == pytest.approx(expected / 1e12 + cost["batches"] * 1e-3)
    assert 1e8 < cost["macs"] < 1e9  # a CIFAR VGG-11 forward pass: about 153 MMACs
    # a job's own sample counts and drops: fewer samples, less work; Learn & Drop's drops, less again
    ld = ex.get("cruciata-cifar10-vgg11-learn_drop")
    full = plan.job_cost(ld, "paper")
    assert full["units"] == pytest.approx(expected)  # planned without drops: as backprop
    small = plan.job_cost(ld, "paper", samples=(5000, 1000))
    dropped = plan.job_cost(ld, "paper", samples=(5000, 1000), drops=[(0, 0), (1, 0), (2, 4)] + [(3, 4)] * 57)
    assert small["units"] < full["units"] / 9 and dropped["units"] < 0.7 * small["units"]


def test_plan_totals_and_compare(tmp_path, capsys):
    found = plan.plan("smoke", rate=1e9)  # a given rate: no probe, no other term
    assert found["seeds"] == 1 and len(found["jobs"]) == len(targets("smoke"))
    assert found["device_costs"]["per_batch"] == 0.0 and not found["device_costs"]["timed"]
    assert found["hours_total"] == pytest.approx(sum(j["units"] + j["pair_dims"] for j in found["jobs"]) / 1e9 / 3600)
    cal = plan.Calibration(1e9, per_read=1e-8, per_pair=1e-9, per_batch=0.01)
    priced = plan.plan("smoke", calibration=cal)
    assert priced["hours_total"] == pytest.approx(
        sum(
            (j["units"] + j["pair_dims"]) / 1e9 + j["reads"] * 1e-8 + j["pairs"] * 1e-9 + j["batches"] * 0.01
            for j in found["jobs"]
        )
        / 3600
    )
    assert set(found["hours_per_paper"]) == {"ma", "karimi", "bhyravabhottla", "cruciata"}

    from bench.run.results import run_path, write_json_atomic

    eid = "ma-cifar10-vgg8-backprop"
    write_json_atomic(
        run_path("smoke", eid, 0, tmp_path),
        result_file(
            "smoke",
            eid,
            metrics={"test_accuracy": 50.0, "train_time_s": 1.0, "wall_time_s": 4.0},
            epochs=[{"epoch_time_s": 0.4, "eval_time_s": 0.1}, {"epoch_time_s": 0.4, "eval_time_s": 0.1}],
        ),
    )
    rows = plan.compare("smoke", cal, tmp_path)
    assert [(r["experiment"], r["method"], r["measured_s"], r["rest_s"]) for r in rows] == [
        (eid, "backprop", pytest.approx(1.0), pytest.approx(3.0))
    ]
    assert rows[0]["predicted_s"] == pytest.approx(cal.seconds(plan.job_cost(ex.get(eid), "smoke")))

    from bench.cli import main

    assert main(["plan", "--profile", "smoke", "--rate", "1e9"]) in (None, 0)
    out = capsys.readouterr().out
    assert "| all" in out and "calibrated on" in out and "1e+09" in out
    written = tmp_path / "plan.json"
    assert main(["plan", "--profile", "smoke", "--rate", "1e9", "--write", str(written)]) in (None, 0)
    capsys.readouterr()
    assert main(
        ["plan", "--profile", "smoke", "--compare", "--results", str(tmp_path), "--calibration", str(written)]
    ) in (None, 0)
    out = capsys.readouterr().out
    assert "| Method" in out and "| backprop" in out and "median 3.0 s more" in out


def test_a_bad_calibration_file_is_one_line(tmp_path, capsys):
    from bench.cli import main

    bad = tmp_path / "cal.json"
    for text, field in (
        ('{"rate": -1}', "rate"),
        ('{"rate": 1e9, "per_call": "x"}', "per_call"),
        ('{"per_call": 1}', "rate"),
        ('{"rate": 1e9, "speed": 1}', "speed"),
    ):
        bad.write_text(text)
        assert main(["plan", "--profile", "smoke", "--calibration", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and str(bad) in err and f"field {field}" in err and "Traceback" not in err
    bad.write_text("{not json")
    assert main(["plan", "--profile", "smoke", "--calibration", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err


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
    assert found["hours_total"] == pytest.approx(
        sum(j["units"] + j["pair_dims"] for j in found["jobs"]) / cal["rate"] / 3600
    )  # a pair search's D MACs too

    from bench.cli import main

    assert main(["plan", "--profile", "smoke", "--calibrate", "printed"]) in (None, 0)
    out = capsys.readouterr().out
    assert "GPU-hours" in out and f"{len(rows)} cells" in out and "middle half" in out
    assert main(["plan", "--calibrate", "printed", "--compare"]) in (None, 0)
    out = capsys.readouterr().out
    assert rows[0]["claim"] in out and "backprop: predicted / printed median 1.00" in out
    dag_profiles = ex.dag_profiles()
    assert "rehearsal" in ex.profiles() and "rehearsal" not in dag_profiles and {"smoke", "paper"} <= set(dag_profiles)
    # --profile all over the two smallest DAG profiles (counting every model of scaled and paper as well takes
    # minutes here; tests/test_resources.py plans paper): one column per DAG profile, the same totals as one profile
    # at a time
    monkeypatch.setattr(ex, "dag_profiles", lambda: ["smoke", "check"])
    assert main(["plan", "--profile", "all", "--calibrate", "printed"]) in (None, 0)
    out = capsys.readouterr().out
    assert all(f"{p} (" in out for p in ("smoke", "check")) and "| all" in out and "GPU-hours" in out
    assert "paper (" not in out and "rehearsal (" not in out
    assert f"{found['hours_total']:.3g}" in out

    from bench import BenchError

    unstated = {p: {k: v for k, v in m.items() if k != "hardware_match"} for p, m in registry.papers().items()}
    monkeypatch.setattr(registry, "papers", lambda: unstated)
    with pytest.raises(BenchError, match="stated hardware"):
        plan.printed_calibration()


def test_the_probe_measures_this_device(tmp_path):
    """The probe times this CPU; a plan with it times every model's layers here (timed: secs, not MACs)."""
    import torch

    cpu = torch.device("cpu")
    cal = plan.probe("smoke", cpu, steps=2, rounds=1)
    assert cal.timed and cal.rate > 1e6 and cal.source == "probe" and cal.device.startswith("CPU")
    assert cal.per_batch > 0 and min(cal.per_read, cal.per_pair, cal.per_pair_dim) >= 0.0
    assert plan.calibrate_device("smoke", cpu, rate=5.0) == plan.Calibration(5.0)
    exp = ex.get("karimi-fashion_mnist-lenet-si_forward")
    cost = plan.job_cost(exp, "smoke", device=cpu)
    assert cost["secs"] > 0 and cost["pairs"] > 0 and cal.seconds(cost) > cost["secs"]


def test_a_companion_that_diverges_is_charged_the_epochs_it_runs():
    """Issue 29: the literal Eq. 7 runs stop at divergence in their first epoch; bench plan charges that, not the
    primary's schedule (the grid entry's charge_epochs)."""
    from bench import experiments as ex

    assert ex.companion_charge_epochs()["karimi-fashion_mnist-lenet-si_forward-literal"] == 1
    literal = plan.job_cost(ex.get("karimi-fashion_mnist-lenet-si_forward-literal"), "check")
    primary = plan.job_cost(ex.get("karimi-fashion_mnist-lenet-si_forward"), "check")
    assert literal["epochs"] == 1 and literal["stage_epochs"] == [1] and primary["epochs"] > 1
    assert 0 < literal["units"] < primary["units"]
    w = method_costs.Work()
    phases = [method_costs.Phase(3, w, w), method_costs.Phase(2, w, w)]
    assert [p.epochs for p in plan.stopped(phases, 4)] == [3, 1] and plan.stopped(phases, None) == phases
