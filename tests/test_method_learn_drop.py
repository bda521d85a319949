"""Learn & Drop and its Freezing baseline (docs/methods/learn-drop.md): the scores and the drop rule against hand-worked
examples, the layer steps (tail + stored maps == full forward, MAC counts), what a drop may and may not change,
the drop/freeze equivalence under forced decisions, the disk store, and that both modes train."""

import math
import statistics

import numpy as np
import pytest
import torch
from helpers import cpu_context, separable

from bench.methods import Diverged
from bench.methods import learn_drop as ld
from bench.methods.learn_drop import loop
from bench.methods.learn_drop.layers import Chain, chain_macs, conv_layers, state_shapes
from bench.methods.learn_drop.scores import GradientSums, layer_score, select_drop, standardize
from bench.methods.learn_drop.store import FeatureStore
from bench.models import build_model
from bench.run.measure import forward_macs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = 1 / 16
VGG = {
    "nonlinearity": "relu",
    "bn": True,
    "dropout": 0.0,
    "conv_bias": True,
    "head_pool": "avg",
    "head_hidden": [512, 512],
    "head_bn": False,
    "head_dropout": 0.5,
    "width_mult": TINY,
}
RESNET = {
    "nonlinearity": "relu",
    "bn": True,
    "dropout": 0.0,
    "conv_bias": False,
    "stem": "cifar",
    "head_pool": "avg",
    "head_hidden": [],
    "width_mult": TINY,
}
OPTS = {"vgg": VGG, "resnet": RESNET}


def build(base, classes=4, size=32, seed=0):
    torch.manual_seed(seed)
    return build_model({"base": base}, 3, classes, size, OPTS[base[:3] if base.startswith("vgg") else "resnet"])


def cfg_for(method, epochs=4, augment=False, lr=0.05, **method_options):
    return {
        "epochs": epochs,
        "lr": lr,
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 16,
        "lr_milestones": [],
        "lr_gamma": 0.1,
        "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3},
        "augment": {"crop_padding": 4 if augment else 0, "hflip": augment},
        "method": method,
        "experiment": f"test-{method}",
        "method_options": {"warmup_epochs": 1, **method_options},
    }


DATA = separable(48, 32, classes=4, size=32)
LEARN_DATA = separable(96, 64, classes=4, size=32, seed=1)


def run(base, method, records=None, model=None, data=DATA, **kw):
    model = model if model is not None else build(base)
    torch.manual_seed(1)  # dropout draws
    return ld.train(model, data, cfg_for(method, **kw), cpu_context(records)), model


# ---------------------------------------------------------------- scores by hand


def hand_score(grads):
    """Eq. 2 from the per-iteration gradients (M x N), in plain numpy."""
    g = np.asarray(grads, dtype=np.float64)
    den = np.abs(g).sum()
    return 1.0 if den == 0 else 1.0 - np.abs(g.sum(axis=0)).sum() / den


def test_layer_score_by_hand():
    same_sign = [[1.0, -2.0, 0.5], [3.0, -0.5, 0.25], [0.5, -1.0, 2.0]]  # each weight keeps its sign: P = 0
    cancel = [[1.0, -2.0, 0.5], [-1.0, 2.0, -0.5]]  # every weight's sum is 0: P = 1
    mixed = [[1.0, -2.0, 0.5], [-0.5, 1.0, 0.5], [2.0, 1.0, -1.0]]
    for grads, expected in ((same_sign, 0.0), (cancel, 1.0), (mixed, None)):
        g = np.asarray(grads)
        expected = hand_score(grads) if expected is None else expected
        # mixed by hand: |2.5| + |0| + |0| = 2.5 over 9.5 -> 1 - 2.5/9.5
        assert layer_score(torch.tensor(g.sum(0)), float(np.abs(g).sum())) == pytest.approx(expected, abs=1e-12)
        assert layer_score(g.sum(0), np.abs(g).sum()) == pytest.approx(expected, abs=1e-12)
    assert hand_score(mixed) == pytest.approx(1 - 2.5 / 9.5)
    # no gradient at all: P = 1 by the rule (docs/methods/learn-drop.md#53-ambiguities item 6)
    assert layer_score(torch.zeros(2, 3), 0.0) == 1.0
    assert layer_score(torch.zeros(2, 3), torch.zeros(())) == 1.0


def test_accumulator_from_raw_grads():
    """The epoch accumulators fed from .grad give Eq. 2 per conv layer and Eq. 1's AAPD."""
    model = build("vgg11")
    layers = conv_layers(model)[:3]
    gen = torch.Generator().manual_seed(0)
    w0, w1, w2 = (layer.scored[0] for layer in layers)
    history = {0: [], 1: []}
    acc = GradientSums(layers, "conv_weight")
    signs = torch.randn(w0.shape, generator=gen).sign()
    for j in range(4):
        g0 = signs * torch.rand(w0.shape, generator=gen)  # never changes sign: P = 0
        g1 = torch.randn(w1.shape, generator=gen) * (1 if j % 2 == 0 else -1)
        if j % 2 == 1:
            g1 = -history[1][-1]  # cancels the previous one exactly: P = 1
        w0.grad, w1.grad, w2.grad = g0, g1, None  # layer 2 gets no gradient: P = 1
        history[0].append(g0.clone())
        history[1].append(g1.clone())
        acc.add()
    p, aapd = acc.scores()
    assert p[0] == pytest.approx(0.0, abs=1e-6)
    assert p[1] == pytest.approx(1.0, abs=1e-6)
    assert p[2] == 1.0
    g = torch.stack(history[0]).flatten(1).double().numpy()
    assert p[0] == pytest.approx(hand_score(g), abs=1e-6)
    assert aapd[0] == pytest.approx(np.abs(g).sum() / w0.numel(), rel=1e-5)
    assert aapd[2] == 0.0


def test_standardize_by_hand():
    p = [0.2, 0.5, 0.9, 0.4]
    mean = sum(p) / 4
    pop = math.sqrt(sum((v - mean) ** 2 for v in p) / 4)
    sample = math.sqrt(sum((v - mean) ** 2 for v in p) / 3)
    assert standardize(p) == pytest.approx([(v - mean) / pop for v in p])
    assert standardize(p, ddof=1) == pytest.approx([(v - mean) / sample for v in p])
    assert list(standardize([0.7, 0.7, 0.7])) == [0.0, 0.0, 0.0]  # std 0: all zeros
    assert list(standardize([0.3])) == [0.0]
    assert list(standardize([0.3, 0.5], ddof=2)) == [0.0, 0.0]


def hand_eq4(p):
    for t in range(len(p) - 1):
        if p[t] > 0 and p[t + 1] < 0:
            return t
    return None


def test_select_drop_eq4_against_max_prefix():
    p = [0.5, -0.2, 1.5, -1.0, -0.8]
    assert hand_eq4(p) == 0  # first +/- transition
    prefix = [sum(p[: t + 1]) for t in range(len(p) - 1)]  # 0.5, 0.3, 1.8, 0.8
    assert max(range(4), key=lambda t: prefix[t]) == 2
    assert select_drop(p) == [0]
    assert select_drop(p, rule="max_prefix") == [0, 1, 2]
    assert select_drop(p, inclusive=False) == []  # Algorithm 1's slice [0:n*] with n* = 0
    assert select_drop([0.2, 0.4, 1.0, -0.3, -1.3], inclusive=False) == [0, 1]
    # candidates may start with a negative P' (docs/methods/learn-drop.md#53-ambiguities item 3): n* = 1, median(-0.3,
    # 0.4) = 0.05
    assert select_drop([-0.3, 0.4, -0.1, 0.0]) == [0, 1]
    # no transition, or only positive then zero
    assert select_drop([-1.0, -0.5, 0.5, 1.0]) == []
    assert select_drop([0.0, 0.0, 0.0]) == []
    # the last layer is never a candidate, under either rule
    assert select_drop([0.5, -0.1, 3.0]) == [0]
    assert select_drop([0.5, -0.1, 3.0], rule="max_prefix") == [0]
    assert select_drop([-1.0, -1.0, 2.0], rule="max_prefix") == []
    with pytest.raises(ValueError):
        select_drop(p, rule="bogus")


def test_select_drop_median_rule():
    p = [0.8, 0.2, 0.6, -0.9, -0.7]  # n* = 2, candidates 0..2, M_c = median(0.8, 0.2, 0.6) = 0.6
    m_c = statistics.median(p[:3])
    assert m_c == 0.6
    assert select_drop(p, []) == [0, 1, 2]  # first drop: M_d = -inf
    dropped_low = [0.1, 0.4, 0.2, 0.9]  # M_d = 0.3 <= 0.6: drop
    assert statistics.median(dropped_low) == pytest.approx(0.3)
    assert select_drop(p, dropped_low) == [0, 1, 2]
    dropped_high = [1.2, 0.9]  # M_d = 1.05 > 0.6: no drop
    assert select_drop(p, dropped_high) == []
    assert select_drop(p, [0.6]) == [0, 1, 2]  # M_c == M_d: drop (>=)


# ---------------------------------------------------------------- layers, stored maps and MACs


def test_conv_layers_and_steps():
    vgg = build("vgg11")
    assert [layer.name for layer in conv_layers(vgg)] == [f"block{i}" for i in range(8)]
    res = build("resnet18")
    layers = conv_layers(res)
    # stem + 8 units x 2 convs + 3 shortcut convs (stages 2-4) = 20 conv layers
    assert len(layers) == 20 and sum(p.numel() for p in res.parameters()) == sum(
        p.numel() for layer in layers for p in layer.params
    ) + sum(p.numel() for p in res.head.parameters())
    assert [layer.name for layer in layers[5:8]] == ["block3.conv0", "block3.conv1", "block3.shortcut"]
    first = conv_layers(res, "first")
    assert [layer.name for layer in first[5:8]] == ["block3.shortcut", "block3.conv0", "block3.conv1"]
    assert [layer.ends_block for layer in layers[:8]] == [True, False, True, False, True, False, False, True]


@pytest.mark.parametrize("base,position", [("vgg11", "last"), ("resnet18", "last"), ("resnet18", "first")])
def test_tail_plus_stored_maps_equals_full_forward(base, position, tmp_path):
    model = build(base)
    run(base, "learn_drop", model=model, epochs=1)  # trained BN statistics
    model.eval()
    layers = conv_layers(model, position)
    steps = [layer.step for layer in layers]
    shapes = state_shapes(model, layers, torch.device("cpu"))
    x = (DATA.x_test.float() / 255 - 0.5) / 0.25
    idx = torch.arange(len(x))
    with torch.no_grad():
        full = model(x)
        assert torch.equal(Chain(steps, model.head)(x), full)
        for cut in range(1, len(layers)):
            state = Chain(steps[:cut])(x)
            assert [tuple(t.shape[1:]) for t in state] == shapes[cut]
            for budget in (1e6, 0):  # device memory, disk memmap
                store = FeatureStore(len(x), shapes[cut], "float32", torch.device("cpu"), budget, tmp_path)
                store.write(idx.flip(0), tuple(t.flip(0) for t in state))  # rows are sample indices
                maps = store.read(idx)
                store.close()
                assert torch.equal(Chain(steps[cut:], model.head)(*maps), full), (cut, budget)
    if base == "resnet18":
        assert len(shapes[2]) == 2 and len(shapes[1]) == 1  # inside a unit: main + skip


@pytest.mark.parametrize("base", ["vgg11", "resnet18"])
def test_head_and_tail_macs(base):
    model = build(base)
    layers = conv_layers(model)
    steps = [layer.step for layer in layers]
    shapes = state_shapes(model, layers, torch.device("cpu"))
    full = forward_macs(model)
    assert chain_macs(Chain(steps, model.head), shapes[0]) == full
    heads = []
    for cut in (1, 2, 3, len(layers) - 1):
        head = chain_macs(Chain(steps[cut:], model.head), shapes[cut])
        tail = chain_macs(Chain(steps[:cut]), shapes[0])
        assert head + tail == full and 0 < head < full
        heads.append(head)
    assert heads == sorted(heads, reverse=True)


# ---------------------------------------------------------------- what a drop changes


def test_dropped_layers_never_change_and_phases():
    model = build("vgg11")
    snaps, records = [], []
    ctx = cpu_context(records)
    ctx.log_epoch = lambda r: (records.append(r), snaps.append({k: v.clone() for k, v in model.state_dict().items()}))
    torch.manual_seed(1)
    out = ld.train(model, DATA, cfg_for("learn_drop", epochs=6, forced_drops={2: [0, 1], 4: [2]}), ctx)
    assert [r["phase"] for r in records] == [0, 1, 2, 3, 2, 3]
    assert [r["dropped_layers"] for r in records] == [0, 0, 2, 2, 3, 3]
    assert [r["feature_store"] for r in records] == [0, 0, 1, 1, 1, 1]
    assert out["dropped_layers_final"] == 3 and out["drop_epoch_l0"] == 2 and out["drop_epoch_l2"] == 4
    assert out["drop_schedule"] == "2:0-1;4:2-2" and out["feature_store"] == 1
    tail = ("blocks.0.", "blocks.1.")
    for later in snaps[2:]:
        for k, v in snaps[1].items():
            if k.startswith(tail):
                assert torch.equal(later[k], v), k
    for later in snaps[4:]:
        for k, v in snaps[3].items():
            if k.startswith("blocks.2."):
                assert torch.equal(later[k], v), k
    # the head kept training
    assert not torch.equal(snaps[-1]["blocks.5.0.weight"], snaps[2]["blocks.5.0.weight"])
    assert not torch.equal(snaps[-1]["head.5.weight"], snaps[2]["head.5.weight"])
    # scores only for head layers, only in scoring epochs (not warm-up, not the extraction epochs)
    scored = [sorted(int(k[len("score_l") :]) for k in r if k.startswith("score_l")) for r in records]
    assert scored == [[], list(range(8)), [], list(range(2, 8)), [], list(range(3, 8))]
    # MACs: the extraction epoch runs the new tail part too; the trainable count shrinks
    layers = conv_layers(model)
    steps = [layer.step for layer in layers]
    shapes = state_shapes(model, layers, torch.device("cpu"))
    head = lambda c: chain_macs(Chain(steps[c:], model.head), shapes[c])  # noqa: E731
    part = lambda a, b: chain_macs(Chain(steps[a:b]), shapes[a])  # noqa: E731
    full = forward_macs(model)
    assert [r["macs_epoch"] for r in records] == [
        full,
        full,
        head(2) + part(0, 2),
        head(2),
        head(3) + part(2, 3),
        head(3),
    ]
    assert out["macs_total"] == sum(r["macs_epoch"] for r in records) * len(DATA.y_train)
    assert out["macs_forward_final_head"] == head(3)
    assert records[0]["trainable_params"] > records[2]["trainable_params"] > records[4]["trainable_params"]
    assert out["params_trainable_final"] == records[-1]["trainable_params"]
    assert all(p.requires_grad for p in model.parameters())  # restored


@pytest.mark.parametrize("base,drops", [("vgg11", {2: [0, 1], 4: [2]}), ("resnet18", {2: [0, 1], 3: [2, 3, 4, 5, 6]})])
def test_freezing_and_dropping_same_decisions_same_updates(base, drops):
    rec_drop, rec_freeze = [], []
    out_d, m_d = run(base, "learn_drop", rec_drop, epochs=6, forced_drops=drops)
    out_f, m_f = run(base, "freezing", rec_freeze, epochs=6, forced_drops=drops)
    for (k, a), b in zip(m_d.state_dict().items(), m_f.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6, rtol=0), k
    for a, b in zip(rec_drop, rec_freeze):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
        assert a["trainable_params"] == b["trainable_params"]
    assert out_d["drop_schedule"] == out_f["drop_schedule"]
    assert out_f["feature_store"] == 0 and out_d["feature_store"] == 1
    assert all(r["macs_epoch"] == out_f["macs_forward_full"] for r in rec_freeze)
    assert out_d["macs_total"] < out_f["macs_total"]


def test_freezing_keeps_frozen_layers_in_eval_and_fixed():
    model = build("resnet18")
    snaps, modes = [], []
    ctx = cpu_context()
    ctx.log_epoch = lambda r: snaps.append({k: v.clone() for k, v in model.state_dict().items()})
    original_step = torch.optim.SGD.step
    unit = model.blocks[1]

    def step(self, *a, **kw):
        modes.append((model.blocks[0].training, unit.convs[0].training, unit.convs[1].training))
        return original_step(self, *a, **kw)

    torch.optim.SGD.step = step
    try:
        torch.manual_seed(1)
        ld.train(model, DATA, cfg_for("freezing", epochs=3, augment=True, forced_drops={1: [0, 1]}), ctx)
    finally:
        torch.optim.SGD.step = original_step
    per_epoch = len(modes) // 3
    assert all(m == (True, True, True) for m in modes[:per_epoch])
    assert all(m == (False, False, True) for m in modes[per_epoch:])
    for k, v in snaps[0].items():  # stem and block1.conv0 (weights and BN statistics) fixed after epoch 1
        if k.startswith(("blocks.0.", "blocks.1.convs.0.")):
            assert torch.equal(snaps[-1][k], v), k


def test_disk_store_is_used_and_removed(tmp_path):
    seen = []
    records = []
    ctx = cpu_context(records)
    ctx.log_epoch = lambda r: (records.append(r), seen.append(sorted(p.name for p in tmp_path.rglob("*"))))
    torch.manual_seed(1)
    out = ld.train(
        build("resnet18"),
        DATA,
        cfg_for(
            "learn_drop",
            epochs=5,
            feature_store_max_mb=0,
            feature_store_dir=str(tmp_path),
            forced_drops={2: [0, 1], 3: [2]},
        ),
        ctx,
    )
    assert out["feature_store"] == 2 and [r["feature_store"] for r in records] == [0, 0, 2, 2, 2]
    assert any(name.endswith(".npy") for name in seen[2]) and "part1.npy" in seen[2]  # main + skip
    assert list(tmp_path.iterdir()) == []  # removed at the end
    assert out["io_time_s_total"] > 0 and all(r["io_time_s"] <= r["epoch_time_s"] for r in records)
    device_out, _ = run("resnet18", "learn_drop", epochs=5, forced_drops={2: [0, 1], 3: [2]})
    assert device_out["test_loss"] == out["test_loss"]  # float32 memmap: the same numbers


def test_disk_store_removed_when_the_run_fails(tmp_path, monkeypatch):
    write = FeatureStore.write
    calls = []

    def failing_write(self, idx, tensors):
        write(self, idx, tensors)
        calls.append(sorted(p.name for p in tmp_path.rglob("*.npy")))
        if len(calls) == 2:
            raise RuntimeError("disk full")

    monkeypatch.setattr(FeatureStore, "write", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        run(
            "vgg11",
            "learn_drop",
            epochs=4,
            feature_store_max_mb=0,
            feature_store_dir=str(tmp_path),
            forced_drops={1: [0]},
        )
    assert calls[0] == ["part0.npy"] and list(tmp_path.iterdir()) == []
    with pytest.raises(Diverged):
        run("vgg11", "learn_drop", epochs=4, lr=float("nan"))


# ---------------------------------------------------------------- options and natural runs


def test_resnet_cut_unit_rounds_down_to_unit_boundaries(monkeypatch):
    monkeypatch.setattr(loop, "select_drop", lambda *a, **kw: [0, 1, 2, 3])  # stem, unit 1, half of unit 2
    out, _ = run("resnet18", "learn_drop", epochs=3, resnet_cut="unit")
    assert out["dropped_layers_final"] == 3 and out["drop_schedule"] == "2:0-2"
    out, _ = run("resnet18", "learn_drop", epochs=3)  # conv cuts: inside unit 2, main + skip stored
    assert out["dropped_layers_final"] == 4


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown"):
        run("vgg11", "learn_drop", epochs=1, bogus=1)
    with pytest.raises(ValueError, match="transition_rule"):
        run("vgg11", "learn_drop", epochs=1, transition_rule="argmax")
    with pytest.raises(ValueError, match="forced_drops"):
        run("vgg11", "learn_drop", epochs=2, forced_drops={1: [1]})  # not the next layer
    with pytest.raises(ValueError, match="forced_drops"):
        run("vgg11", "freezing", epochs=2, forced_drops={1: list(range(8))})  # the last conv


@pytest.mark.parametrize("method", ["learn_drop", "freezing"])
def test_learns_with_natural_drops(method):
    records = []
    out, _ = run("vgg11", method, records, data=LEARN_DATA, epochs=8, warmup_epochs=2)
    assert out["decisions"] >= 1 and out["dropped_layers_final"] >= 1  # Eq. 4 dropped something by itself
    assert min(out["drop_epoch_l0"], 8) >= 3  # not before the first scoring epoch
    assert out["test_accuracy"] > 60.0  # chance: 25 %
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert out["train_time_s"] == pytest.approx(sum(r["epoch_time_s"] for r in records))
    keys = {
        "epoch",
        "phase",
        "lr",
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "epoch_time_s",
        "io_time_s",
        "eval_time_s",
        "trainable_params",
        "model_params",
        "macs_epoch",
        "dropped_layers",
        "newly_dropped",
        "feature_store",
    }
    assert all(keys <= set(r) for r in records)
    assert all(isinstance(v, (int, float)) for k, v in out.items() if k not in ("drop_schedule", "layer_names"))


@pytest.mark.parametrize("base", ["vgg11", "resnet18"])
@pytest.mark.parametrize("method", ["learn_drop", "freezing"])
def test_models_run_in_both_modes(base, method):
    records = []
    out, _ = run(base, method, records, epochs=4, augment=True, warmup_epochs=1, transition_rule="max_prefix")
    assert len(records) == 4 and math.isfinite(out["test_loss"])
    assert out["scored_layers"] == (8 if base == "vgg11" else 20)
