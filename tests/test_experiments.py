"""Experiments are derived from the registry: cells that share a run share an experiment; profiles scale a
config without changing what the experiment is."""

import pytest

from bench import BenchError
from bench import experiments as ex
from bench.claims.registry import load_claims
from bench.run.targets import support, targets


def exp_of(claim_id):
    c = next(c for c in load_claims() if c.id == claim_id)
    return ex.Experiment(*c.experiment_key()).id if c.experiment_key() else None


def test_cells_of_one_run_share_one_experiment():
    # Learn & Drop's SGD time and accuracy come from one run
    assert (
        exp_of("cruciata.1.vgg-11.mnist.sgd.t")
        == exp_of("cruciata.1.vgg-11.mnist.sgd.a")
        == "cruciata-mnist-vgg11-backprop"
    )
    # Ma prints ResNet18 on CIFAR-10 in Tables III and V: one configuration, one experiment
    assert exp_of("ma.III.resnet18.global") == exp_of("ma.V.resnet18.global") == "ma-cifar10-resnet18-backprop"
    # Karimi's Table 5 times come from the runs of Table 3's CIFAR-10 accuracies
    assert exp_of("karimi.5.cifar-10.proposed-method.vgg16") == exp_of("karimi.3.cifar-10.proposed-method.vgg16")


def test_relative_cells_name_their_baseline():
    c = next(c for c in load_claims() if c.id == "cruciata.2.resnet-50.cifar-10.dropping.dt")
    assert ex.Experiment(*c.experiment_key()).id == "cruciata-cifar10-resnet50-learn_drop"
    assert ex.Experiment(*c.baseline_key()).id == "cruciata-cifar10-resnet50-backprop"


def test_cells_without_a_run_have_no_experiment():
    assert exp_of("cruciata.3.vgg-11.sgd.flops") is None  # FLOPs: from the model alone
    assert exp_of("bhyravabhottla.text.cnn12.conv1.params") is None
    assert exp_of("cruciata.text.vgg-average.freezing.dt") is None  # an average of other cells


def test_unique_experiments_and_their_ids():
    exps = ex.experiments()
    # Ma 57 configurations x 2 methods (+ 16 'wide', 7 'classes20' and 57 'sequential' companion runs), Karimi 110
    # (+ 47 literal and 63 fork companion runs), Bhyravabhottla 8 (+ 16, + 16 at the other epochs), Cruciata 21 x 3
    # (+ 12 without augmentation, + 6 on 50,000 MNIST images)
    assert len(ex.cell_experiments()) == 114 + 110 + 8 + 63
    assert len(exps) == 114 + 16 + 7 + 57 + 110 + 47 + 63 + 8 + 16 + 16 + 63 + 12 + 6
    for eid, e in exps.items():
        assert eid == e.id and eid.split("-")[0] == e.paper
        assert all(ch.isalnum() or ch in "-_" for ch in eid)
    assert "karimi-cifar100-vgg19-backprop-adam" in exps


def test_targets_are_the_supported_experiments_only(monkeypatch):
    paper = targets("paper")
    assert "ma-cifar10-vgg8b_e1-backprop" in paper and "cruciata-imagenette-resnet152-backprop" in paper
    for method in (
        "predsim",
        "si_forward",
        "fb_si",
        "greedy_layerwise",
        "belilovsky_greedy",
        "layer_to_layer",
        "learn_drop",
        "freezing",
    ):
        assert any(t.endswith(f"-{method}") for t in paper), method
    assert "karimi-ag_news-vdcnn9-backprop-sgd" in paper and "karimi-raabin_wbc-lenet-backprop-adam" in paper
    # every profile runs the same experiments, but for the companions a grid limits to some profiles
    limited = ex.companion_profiles()
    assert limited and all(set(p) < {"smoke", "check", "scaled", "paper"} for p in limited.values())
    assert set(targets("smoke")) - set(paper) == {e for e, p in limited.items() if "paper" not in p}
    assert set(paper) == set(ex.experiments()) - {e for e, p in limited.items() if "paper" not in p}
    assert "karimi-cifar100-vgg16-si_forward-batch_pairs" in targets("scaled")
    assert "karimi-cifar100-vgg16-si_forward-batch_pairs" not in paper
    assert "only in the smoke, check, scaled profile" in support(
        ex.get("karimi-cifar100-vgg16-si_forward-batch_pairs"), "paper"
    )
    # a method the suite could not run would leave the targets, with its reason
    from bench import methods

    monkeypatch.delitem(methods.IMPLEMENTED, "freezing")
    support.cache_clear()
    try:
        assert "'freezing' is not implemented" in support(ex.get("cruciata-cifar10-vgg16-freezing"), "paper")
        assert "cruciata-cifar10-vgg16-freezing" not in targets("paper")
    finally:
        support.cache_clear()


def test_profiles_scale_epochs_schedule_and_width():
    exp = ex.get("cruciata-cifar10-vgg16-backprop")
    paper = ex.config(exp, "paper")
    assert (paper["epochs"], paper["lr_milestones"], paper["model"]["width_mult"]) == (60, [20], 1.0)
    assert paper["data"]["source"] == "real" and paper["profile"] == "paper"
    scaled = ex.config(exp, "scaled")  # Learn & Drop papers run at half their epochs in the scaled profile
    assert (scaled["epochs"], scaled["lr_milestones"]) == (30, [10])
    smoke = ex.config(exp, "smoke")
    # smoke gives 4 epochs: for Learn & Drop a warm-up, then epochs that can drop
    assert smoke["epochs"] == 4 and smoke["lr_milestones"] == [1] and smoke["data"]["source"] == "synthetic"
    drop = ex.config(ex.get("cruciata-cifar10-vgg16-learn_drop"), "smoke")["method_options"]
    assert (
        drop["warmup_epochs"] == 1
        and ex.config(ex.get("cruciata-cifar10-vgg16-learn_drop"), "paper")["method_options"]["warmup_epochs"] == 10
    )
    ma_smoke = ex.config(ex.get("ma-cifar10-vgg8-backprop"), "smoke")
    assert ma_smoke["epochs"] == 4 and ma_smoke["batch_size"] == 16 and ma_smoke["model"]["dropout"] == 0.0
    # the smoke profile's larger steps, credited to it with the grid's setting it scales
    assert ma_smoke["lr"] == 10 * ex.config(ex.get("ma-cifar10-vgg8-backprop"), "paper")["lr"]
    assert ma_smoke["sources"]["lr"].startswith(
        "profile smoke (bench/profiles.yaml): 0.0005 x 10; the setting it scales: paper"
    )
    assert ma_smoke["sources"]["model.dropout"].startswith("profile smoke (bench/profiles.yaml): 0.2 -> 0.0")
    # per-experiment budgets match id patterns, after the paper's
    assert ex.config(ex.get("karimi-cifar10-lenet-si_forward"), "smoke")["model"]["width_mult"] == 0.5
    assert ex.config(ex.get("karimi-cifar10-lenet-si_forward"), "smoke")["epochs"] == 8
    assert ex.config(ex.get("bhyravabhottla-cifar10-densenet-layer_to_layer"), "smoke")["batch_size"] == 64
    assert smoke["batch_size"] <= 64 and smoke["model"]["width_mult"] < 1
    assert ex.config(ex.get("ma-cifar10-vgg8-backprop"), "check")["lr"] == ma_smoke["lr"] / 10
    ma = ex.config(ex.get("ma-cifar100-resnet18_r5-backprop"), "scaled")
    assert ma["epochs"] == 40 and ma["lr_milestones"] == [20, 30, 36, 38]  # the paper's 200/300/356/376 of 400
    assert ex.config_hash(paper) != ex.config_hash(scaled)


def test_bad_ids_and_profiles_are_clear_errors():
    with pytest.raises(BenchError, match="unknown experiment 'ma-cifar10-vgg99-backprop'"):
        ex.get("ma-cifar10-vgg99-backprop")
    with pytest.raises(BenchError, match="unknown profile 'tiny': choose one of smoke, check, scaled, paper"):
        ex.config(ex.get("ma-cifar10-vgg8-backprop"), "tiny")


@pytest.mark.parametrize(
    "given,expected", [(None, [0, 1, 2]), (2, [0, 1]), ([3, 1], [1, 3]), ("0,1,2", [0, 1, 2]), ("5", [5])]
)
def test_seeds(given, expected):
    assert ex.seeds("paper", given) == expected


@pytest.mark.parametrize("bad", [0, "a,b", [], [-1], True])
def test_bad_seeds(bad):
    with pytest.raises(BenchError, match="seeds"):
        ex.seeds("paper", bad)


def test_companion_runs_stand_beside_the_cells_they_qualify():
    comps = ex.companions()
    named = ex.cell_experiments()
    assert not set(comps) & set(named), "a companion is never a cell's own experiment"
    assert set(comps) <= set(ex.experiments())
    for eid, exp in named.items():
        if exp.paper == "bhyravabhottla" and exp.dataset == "cifar100":
            notebook = ex.Experiment(exp.paper, "cifar10", exp.model, exp.method)
            assert comps[notebook.id][1] == eid and "notebook" in comps[notebook.id][2]
    for _eid, (exp, beside, _why) in comps.items():
        if exp.variant == "equal_epochs":
            assert exp.method == "backprop" and ex.experiments()[beside].method == "layer_to_layer"
    # every SI run (the triplet-loss reading: hinged at margin 0, mean over anchors, unit-norm features) has its
    # Eq. 7-literal twin
    for eid, exp in named.items():
        if exp.method in ("si_forward", "fb_si"):
            twin = ex.Experiment(exp.paper, exp.dataset, exp.model, exp.method, "literal")
            assert comps[twin.id][1] == eid
            opts = ex.config(twin, "paper")["method_options"]
            assert opts["loss_reduction"] == "sum" and opts["normalize_features"] is False and opts["hinge"] is False
            primary = ex.config(exp, "paper")["method_options"]
            assert primary["loss_reduction"] == "mean" and primary["normalize_features"] is True and primary["hinge"]
    unhinged = ex.config(ex.get("karimi-cifar10-lenet-fb_si-nohinge"), "scaled")["method_options"]
    assert unhinged["hinge"] is False and unhinged["normalize_features"] is True
    # both readings of the dataset get their equal-epoch baseline
    assert {e.dataset for e, _, _ in comps.values() if e.variant == "equal_epochs"} == {"cifar10", "cifar100"}


def test_a_bad_companion_entry_names_its_grid(monkeypatch):
    bad = {"paper": "bhyravabhottla", "settings": [], "companions": [{"of": {}, "set": {"model": "x"}, "why": "w"}]}
    monkeypatch.setattr(ex, "grid", lambda paper: bad)
    ex.companion_entries.cache_clear()
    try:
        with pytest.raises(BenchError, match="bhyravabhottla.yaml: companions entry 1"):
            ex.companions()
    finally:
        ex.companion_entries.cache_clear()


def test_equal_epoch_baselines_match_the_staged_runs():
    """The equal_epochs companion trains as many epochs as all layer-to-layer stages of its model together."""
    from bench.methods.layer_to_layer import keras_layers
    from bench.models import build_model

    for eid, (exp, beside, _) in ex.companions().items():
        if exp.variant != "equal_epochs":
            continue
        for profile in ("paper", "scaled", "check", "smoke"):
            staged = ex.config(ex.get(beside), profile)
            model = build_model(staged["architecture"], 3, 10, 32, staged["model"])
            stages = len(keras_layers(model)) // 2
            assert ex.config(exp, profile)["epochs"] == stages * staged["method_options"]["epochs_per_stage"], eid


def test_provenance_names_the_profile_for_what_it_scaled():
    smoke = ex.config(ex.get("ma-cifar10-vgg8-predsim"), "smoke")
    paper = ex.config(ex.get("ma-cifar10-vgg8-predsim"), "paper")
    src = smoke["sources"]
    assert src["epochs"].startswith(f"profile smoke (bench/profiles.yaml): {paper['epochs']} -> {smoke['epochs']}; ")
    assert paper["sources"]["epochs"] in src["epochs"]  # the grid's source of the value it scales, kept
    assert src["batch_size"].startswith("profile smoke") and src["model.width_mult"].endswith("x 0.0625")
    assert src["data.train_samples"] == "profile smoke (bench/profiles.yaml): 128 stand-in samples"
    assert paper["sources"]["epochs"].startswith("paper") and paper["sources"]["data.train_samples"].endswith(
        "whole split"
    )
    assert src["lr"].endswith(paper["sources"]["lr"])  # scaled by smoke, with the grid's source of what it scaled
    check = ex.config(ex.get("ma-cifar10-vgg8-predsim"), "check")["sources"]
    assert check["lr"] == paper["sources"]["lr"]  # not scaled: the grid's source
    # provenance text is not what trains: it changes neither the config hash nor a result's validity
    assert ex.config_hash(smoke) == ex.config_hash({**smoke, "sources": {}})


def test_the_paper_profile_runs_every_fork_that_can_flip_a_claim():
    """Issue 29: each reading that could move a printed number by more than its tolerance runs beside the primary in
    the `paper` (and `scaled`) profile, with the id suffix naming it."""
    paper, scaled = set(targets("paper")), set(targets("scaled"))
    for model in (
        "cnn12",
        "vgg16",
        "densenet",
        "resnext",
    ):  # the standard run at both the notebook's and the text's epochs
        runs = {
            ex.config(ex.get(e), "paper")["epochs"]
            for e in paper
            if e.startswith(f"bhyravabhottla-cifar100-{model}-backprop") and not e.endswith("equal_epochs")
        }
        assert runs == {10, 300}, (model, runs)
    l2l = ex.config(ex.get("bhyravabhottla-cifar100-vgg16-layer_to_layer-epochs300"), "paper")
    assert l2l["method_options"]["epochs_per_stage"] == 300
    forks = {
        "karimi-cifar10-vgg16-si_forward-growing": ("train_scope", "growing"),
        "karimi-cifar10-vgg16-si_forward-research": ("neighbours", "data_epoch"),
        "karimi-dbpedia-vdcnn9-si_forward-research": ("neighbours", "data_epoch"),
        "karimi-fashion_mnist-lenet-si_forward-sameschedule": ("layer_lr_schedule", "scaled"),
        "ma-cifar100-resnet18-predsim-sequential": ("schedule", "sequential"),
    }
    for eid, (key, value) in forks.items():
        assert eid in paper and eid in scaled, eid
        assert ex.config(ex.get(eid), "paper")["method_options"][key] == value, eid
    for eid in (
        "cruciata-cifar10-vgg16-learn_drop-noaug",
        "cruciata-imagenette-resnet18-freezing-noaug",
        "ma-cifar10-vgg16-backprop-wide",
        "cruciata-mnist-resnet18-learn_drop-train50k",
    ):
        assert eid in paper and eid in scaled, eid
    assert ex.config(ex.get("cruciata-cifar10-vgg16-learn_drop-noaug"), "paper")["augment"] == {
        "crop_padding": 0,
        "hflip": False,
    }
    assert ex.config(ex.get("cruciata-mnist-resnet18-learn_drop-train50k"), "paper")["data"]["train_samples"] == 50000
    assert ex.config(ex.get("cruciata-mnist-resnet18-learn_drop"), "paper")["data"]["train_samples"] is None
    # every companion says what states its reading; the smoke profile (CI's DAG) gains none of the new forks
    assert {b for _, _, b in ex.companion_readings().values()} == {"text", "code", "choice"}
    assert not any(
        e.endswith(("-research", "-sameschedule", "-sequential", "-noaug", "-train50k", "-epochs300", "-epochs10"))
        for e in targets("smoke")
    )
