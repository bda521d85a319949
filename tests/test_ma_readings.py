"""The two readings Ma et al. leave open (issue 16 item 6): the conv width multiplier `feat_mult` (the N&E code's
--feat-mult) and class-sampled batches for PredSim (--classes-per-batch), with the companions that run the code's
readings beside the cells."""

import pytest
import torch
from helpers import separable

from bench import BenchError
from bench import experiments as ex
from bench.data.loader import Batches, check_class_sampling, class_sampled_batches
from bench.methods import predsim
from bench.models import build_model

MA_VGG = {
    "nonlinearity": "leakyrelu",
    "bn": True,
    "conv_bias": True,
    "head_pool": "flatten",
    "head_hidden": [1024],
    "head_bn": True,
}
MA_RESNET = {
    "nonlinearity": "leakyrelu",
    "bn": True,
    "conv_bias": False,
    "stem": "cifar",
    "head_pool": "avg",
    "head_hidden": [],
}


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def conv_widths(model):
    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


# ---------------------------------------------------------------- feat_mult


def test_feat_mult_doubles_every_vgg_conv_and_leaves_the_hidden_fc():
    plain = build_model({"base": "vgg16"}, 3, 10, 32, MA_VGG)
    wide = build_model({"base": "vgg16"}, 3, 10, 32, {**MA_VGG, "feat_mult": 2})
    assert conv_widths(plain) == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert conv_widths(wide) == [2 * w for w in conv_widths(plain)]
    fcs = [m for m in wide.head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in fcs] == [(1024, 1024), (1024, 10)]  # 1024 x 1 x 1 flattened
    assert wide(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_feat_mult_hand_count_of_a_tiny_vgg8():
    """VGG8 at width 1/16 (4, 8, 16, 32, 32) made twice as wide: 8, 16, 32, 64, 64; conv (bias) + BN per block,
    then average pool and Linear(64 -> 10)."""
    model = build_model(
        {"base": "vgg8"},
        3,
        10,
        32,
        {"bn": True, "conv_bias": True, "head_pool": "avg", "width_mult": 1 / 16, "feat_mult": 2},
    )
    blocks = [(3, 8), (8, 16), (16, 32), (32, 64), (64, 64)]
    expected = [cin * cout * 9 + cout + 2 * cout for cin, cout in blocks]
    assert expected == [240, 1200, 4704, 18624, 37056]
    assert [n_params(b) for b in model.blocks] == expected
    assert n_params(model.head) == 64 * 10 + 10
    assert n_params(model) == 62474


def test_the_profile_still_scales_a_widened_model():
    """width_mult (the profile) and feat_mult (the model) multiply: 1/4 x 2 is the width of 1/2 x 1."""
    for base, opts in (("vgg19", MA_VGG), ("resnet18", MA_RESNET), ("resnet50", MA_RESNET)):
        a = build_model({"base": base}, 3, 100, 32, {**opts, "width_mult": 0.25, "feat_mult": 2})
        b = build_model({"base": base}, 3, 100, 32, {**opts, "width_mult": 0.5})
        assert conv_widths(a) == conv_widths(b), base
        if not opts["head_hidden"]:  # VGG's hidden FC follows width_mult alone (256 vs 512 units here)
            assert n_params(a) == n_params(b), base
    r18 = build_model({"base": "resnet18"}, 3, 10, 32, {**MA_RESNET, "feat_mult": 3})
    assert conv_widths(r18)[0] == 192 and max(conv_widths(r18)) == 1536  # the stem 64 x 3, the last stage 512 x 3
    assert r18.head[-1].in_features == 1536
    r50 = build_model({"base": "resnet50"}, 3, 10, 32, {**MA_RESNET, "feat_mult": 2})
    assert r50.head[-1].in_features == 2048 * 2  # Bottleneck: 4 x the widened 512


def test_feat_mult_errors():
    for bad in (0, -1, "2", True):
        with pytest.raises(ValueError, match="feat_mult"):
            build_model({"base": "vgg8"}, 3, 10, 32, {"feat_mult": bad})
    with pytest.raises(BenchError, match="feat_mult 2: lenet does not apply it"):
        build_model({"base": "lenet"}, 3, 10, 32, {"feat_mult": 2})
    build_model({"base": "lenet"}, 3, 10, 32, {"feat_mult": 1})  # 1 is the default everywhere


def test_ma_wide_companion_has_the_width_of_the_recipe_whose_pair_its_row_prints():
    """N&E's run_experiments.sh: vgg11b --feat-mult 2 runs (3e-4, 0.25) on CIFAR-10 and (3e-4, 0.1) on CIFAR-100;
    --feat-mult 3 runs (3e-4, 0.3) and (3e-4, 0.15) (docs/methods/predsim.md#13-defaults-and-recipes)."""
    recipes = {
        ("cifar10", 3e-4, 0.25): 2,
        ("cifar100", 3e-4, 0.1): 2,
        ("cifar10", 3e-4, 0.3): 3,
        ("cifar100", 3e-4, 0.15): 3,
    }
    wide = {eid: (exp, beside) for eid, (exp, beside, _) in ex.companions().items() if exp.variant == "wide"}
    assert {(e.dataset, e.model, e.method) for e, _ in wide.values()} == {
        (d, m, k)
        for d in ("cifar10", "cifar100")
        for m in ("vgg16", "vgg19", "resnet18", "resnet50")
        for k in ("predsim", "backprop")
    }
    for eid, (exp, beside) in wide.items():
        cfg, sources = ex.paper_config(exp)
        assert cfg["model"]["feat_mult"] == recipes[(exp.dataset, cfg["lr"], cfg["model"]["dropout"])], eid
        assert sources["model.feat_mult"].startswith("code"), eid
        primary, primary_sources = ex.paper_config(ex.get(beside))
        assert primary["model"]["feat_mult"] == 1 and primary_sources["model.feat_mult"].startswith("paper")
        assert {k: v for k, v in primary.items() if k != "model"} == {k: v for k, v in cfg.items() if k != "model"}
    # every profile scales the widened model: smoke builds it at 1/16 of the recipe's width
    smoke = ex.config(ex.get("ma-cifar10-resnet18-predsim-wide"), "smoke")
    model = build_model(smoke["architecture"], 3, 10, 32, smoke["model"])
    assert conv_widths(model)[0] == 12  # 64 x 3 / 16


# ---------------------------------------------------------------- class-sampled batches


def test_class_sampled_batches_hold_at_most_k_classes_and_visit_every_sample_once():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([50] * 90 + [7] * 10)])  # 100 classes, uneven
    batches = class_sampled_batches(labels, 128, 20, torch.Generator().manual_seed(0))
    assert all(len(labels[b].unique()) <= 20 for b in batches)
    assert all(len(b) <= 128 for b in batches)
    assert sum(len(labels[b].unique()) == 20 for b in batches) > len(batches) // 2
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(len(labels)))
    short = [len(b) for b in batches if len(b) < 128]
    assert len(short) <= 5 and min(short) >= 2, short  # only near the end of the epoch, when the chosen classes run out


def test_class_sampled_batches_never_leave_a_lone_sample():
    """A batch of one sample cannot train BatchNorm: across many epochs of tiny data no batch has one sample,
    and the class limit is exceeded only by a last batch of at most 3 that took the epoch's lone last sample."""
    labels = torch.arange(96) % 8
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        batches = class_sampled_batches(labels, 16, 2, gen)
        assert min(len(b) for b in batches) >= 2
        assert all(len(labels[b].unique()) <= 2 or len(b) <= 3 for b in batches)
        assert torch.equal(torch.cat(batches).sort().values, torch.arange(96))


def test_class_sampled_batches_are_reproducible():
    labels = torch.arange(2000) % 40
    same = [class_sampled_batches(labels, 64, 10, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*same, strict=True))
    other = class_sampled_batches(labels, 64, 10, torch.Generator().manual_seed(4))
    assert not all(len(a) == len(b) and torch.equal(a, b) for a, b in zip(same[0], other))


def test_batches_switch_between_class_sampled_and_uniform_epochs():
    x = torch.randint(0, 256, (600, 3, 4, 4), dtype=torch.uint8)
    y = torch.arange(600) % 30
    b = Batches(
        x,
        y,
        50,
        device="cpu",
        mean=[0.5] * 3,
        std=[0.25] * 3,
        shuffle=True,
        seed=1,
        augment={"crop_padding": 1, "hflip": True},
    )
    b.classes_per_batch = 5
    sampled = list(b.indexed())
    assert all(len(yb.unique()) <= 5 for _, _, yb in sampled)
    assert all(torch.equal(yb, y[idx]) for idx, _, yb in sampled)
    assert torch.equal(torch.cat([idx for idx, _, _ in sampled]).sort().values, torch.arange(600))
    with pytest.raises(RuntimeError, match="epoch_batches"):
        b.epoch_order()
    b.classes_per_batch = 0  # uniform again: a randperm cut into full batches, which mix many classes
    uniform = list(b.indexed())
    assert [len(yb) for _, _, yb in uniform] == [50] * 12
    assert min(len(yb.unique()) for _, _, yb in uniform) > 5


def test_predsim_samples_classes_until_the_epoch_then_uniform_and_reproducibly(monkeypatch):
    seen = []
    step = predsim.PredSim.train_step

    def recording(self, x, y):
        seen[-1].append(y.clone())
        return step(self, x, y)

    monkeypatch.setattr(predsim.PredSim, "train_step", recording)
    data = separable(96, 16, classes=8, size=16, shuffle=True)
    cfg = {
        "epochs": 3,
        "lr": 1e-3,
        "optimizer": "adam",
        "batch_size": 16,
        "lr_milestones": [],
        "lr_gamma": 0.25,
        "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3},
        "augment": {"crop_padding": 0, "hflip": False},
        "experiment": "test-classes",
        "method_options": {"classes_per_batch": 2, "classes_per_batch_until_epoch": 2},
    }
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model({"base": "vgg8b"}, 3, 8, 16, {**MA_VGG, "width_mult": 1 / 16})
        records = []

        def log(record, records=records):
            records.append(record)
            seen.append([])

        seen.append([])
        predsim.train(model, data, cfg, predsim_context(log))
        runs.append([epoch for epoch in seen if epoch])
        seen.clear()
    first, second = runs
    assert len(first) == 3
    for epoch in first[:2]:  # epochs 1-2: at most 2 classes per batch (but a last batch of <= 3 takes a lone sample)
        assert all(len(y.unique()) <= 2 or (len(y) <= 3 and len(y.unique()) == 3) for y in epoch)
        assert sum(len(y.unique()) <= 2 for y in epoch) >= len(epoch) - 1 and min(len(y) for y in epoch) >= 2
        assert sum(len(y) for y in epoch) == 96
    assert [len(y) for y in first[2]] == [16] * 6 and max(len(y.unique()) for y in first[2]) > 2  # uniform
    assert all(torch.equal(a, b) for ea, eb in zip(first, second, strict=True) for a, b in zip(ea, eb, strict=True))


def predsim_context(log):
    from bench.methods.training import Context

    return Context(torch.device("cpu"), 0, log, progress=False)


def test_class_sampling_per_epoch():
    opts = {"classes_per_batch": 20, "classes_per_batch_until_epoch": 200}
    assert [predsim.class_sampling(opts, e) for e in (0, 199, 200, 399)] == [20, 20, 0, 0]  # 1-based epochs 1-200
    assert predsim.class_sampling({"classes_per_batch": 20, "classes_per_batch_until_epoch": 0}, 399) == 20
    assert predsim.class_sampling({"classes_per_batch": 0, "classes_per_batch_until_epoch": 0}, 0) == 0


@pytest.mark.parametrize(
    "opts,name",
    [
        ({"classes_per_batch": -1}, "classes_per_batch"),
        ({"classes_per_batch": 2.5}, "classes_per_batch"),
        ({"classes_per_batch": True}, "classes_per_batch"),
        ({"classes_per_batch": 1}, "classes_per_batch 1"),
        ({"classes_per_batch": 20, "classes_per_batch_until_epoch": -3}, "classes_per_batch_until_epoch"),
        ({"classes_per_batch": 20, "classes_per_batch_until_epoch": "200"}, "classes_per_batch_until_epoch"),
        ({"classes_per_batch_until_epoch": 200}, "classes_per_batch_until_epoch 200"),
    ],
)
def test_bad_class_sampling_options_name_the_option(opts, name):
    with pytest.raises(ValueError, match=name):
        check_class_sampling(opts.get("classes_per_batch", 0), opts.get("classes_per_batch_until_epoch", 0))
    with pytest.raises(BenchError, match=f"predsim {name}"):  # the method's options: one line from the CLI
        predsim.options({"method_options": opts})


def test_class_sampling_needs_fewer_classes_than_the_dataset():
    data = separable(32, 8, classes=4, size=16)
    cfg = {
        "epochs": 1,
        "lr": 1e-3,
        "optimizer": "adam",
        "batch_size": 8,
        "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3},
        "augment": {},
        "experiment": "t",
        "method_options": {"classes_per_batch": 4},
    }
    model = build_model({"base": "vgg8b"}, 3, 4, 16, {**MA_VGG, "width_mult": 1 / 16})
    with pytest.raises(BenchError, match="classes_per_batch 4 is not below the dataset's 4 classes"):
        predsim.train(model, data, cfg, predsim_context(lambda r: None))


def test_ma_classes20_companion_and_its_scaled_epochs():
    comps = {eid: (exp, beside) for eid, (exp, beside, _) in ex.companions().items() if exp.variant == "classes20"}
    assert {e.model for e, _ in comps.values()} == {"vgg8", "vgg11", "vgg16", "vgg19", "vgg8b", "resnet18", "resnet50"}
    assert {(e.dataset, e.method) for e, _ in comps.values()} == {("cifar100", "predsim")}
    eid = "ma-cifar100-vgg16-predsim-classes20"
    assert comps[eid][1] == "ma-cifar100-vgg16-predsim"
    for profile, epochs, until in (("paper", 400, 200), ("scaled", 40, 20), ("check", 2, 1), ("smoke", 4, 2)):
        cfg = ex.config(ex.get(eid), profile)
        assert cfg["epochs"] == epochs and cfg["method_options"]["classes_per_batch"] == 20
        assert cfg["method_options"]["classes_per_batch_until_epoch"] == until, profile
        assert cfg["sources"]["method_options.classes_per_batch"].startswith("code")
        primary = ex.config(ex.get(comps[eid][1]), profile)
        assert primary["method_options"]["classes_per_batch"] == 0
        assert primary["sources"]["method_options.classes_per_batch"].startswith("paper")
