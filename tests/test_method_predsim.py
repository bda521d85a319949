"""PredSim local-error learning (docs/methods/predsim.md): the similarity matrix and loss against plain numpy, the
decoder
pooling, the unit decomposition of VGG and ResNet BlockNets (optimizers, detached boundaries, one step), and a
short run that learns."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import separable

from bench import BenchError
from bench.methods import predsim
from bench.methods.training import Context
from bench.models import build_model

MA_COMMON = {"nonlinearity": "leakyrelu", "negative_slope": 0.01, "bn": True, "dropout_kind": "channel"}
MA_VGG = {
    **MA_COMMON,
    "conv_bias": True,
    "head_pool": "flatten",
    "head_hidden": [1024],
    "head_bn": True,
    "dropout": 0.2,
}
MA_RESNET = {**MA_COMMON, "conv_bias": False, "stem": "cifar", "head_pool": "avg", "head_hidden": [], "dropout": 0.3}
TINY = 1 / 16


def build(base, size=32, num_classes=10, **opts):
    base_opts = MA_VGG if base.startswith("vgg") else MA_RESNET
    return build_model({"base": base}, 3, num_classes, size, {**base_opts, "width_mult": TINY, **opts})


def cfg_for(epochs=1, batch_size=32, lr=5e-4, **method_options):
    return {
        "epochs": epochs,
        "lr": lr,
        "optimizer": "adam",
        "batch_size": batch_size,
        "lr_milestones": [2],
        "lr_gamma": 0.25,
        "weight_decay": 0.0,
        "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3},
        "augment": {"crop_padding": 0, "hflip": False},
        "experiment": "test-predsim",
        "method_options": method_options,
    }


# ---------------------------------------------------------------- independent numpy reference


def np_similarity(x: np.ndarray, std_pool=True) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 4 and std_pool and x.shape[1] > 3 and x.shape[2] > 1:
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1).std(axis=2, ddof=1)
    else:
        x = x.reshape(x.shape[0], -1)
    out = np.empty((x.shape[0], x.shape[0]))
    for a in range(x.shape[0]):
        for b in range(x.shape[0]):
            za = (x[a] - x[a].mean()) / (1e-8 + np.sqrt(((x[a] - x[a].mean()) ** 2).sum()))
            zb = (x[b] - x[b].mean()) / (1e-8 + np.sqrt(((x[b] - x[b].mean()) ** 2).sum()))
            out[a, b] = min(1.0, max(-1.0, float((za * zb).sum())))
    return out


def np_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    logits = np.asarray(logits, dtype=np.float64)
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - logits[np.arange(len(labels)), labels]))


# ---------------------------------------------------------------- S(.) and the loss


def test_similarity_matrix_2d_matches_numpy():
    x = torch.tensor(
        [[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [1.0, 0.0, 1.0, 0.0], [2.0, 4.0, 6.0, 8.5], [0.5, -1.0, 2.0, 0.0]]
    )
    s = predsim.similarity_matrix(x)
    assert s.shape == (5, 5)
    np.testing.assert_allclose(s.numpy(), np_similarity(x.numpy()), atol=1e-6)
    assert s[0, 1].item() == pytest.approx(-1.0, abs=1e-6)  # reversed sequence: perfectly anti-correlated
    assert s[0, 3].item() == pytest.approx(np.corrcoef([1, 2, 3, 4], [2, 4, 6, 8.5])[0, 1], abs=1e-6)


def test_similarity_matrix_4d_std_pooling_rule():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 3, 3, generator=gen)
    s = predsim.similarity_matrix(x)
    # hand-made: per-channel spatial std with the unbiased divisor H*W - 1 = 8
    flat = x.numpy().reshape(4, 5, 9).astype(np.float64)
    std = np.sqrt(((flat - flat.mean(axis=2, keepdims=True)) ** 2).sum(axis=2) / 8)
    np.testing.assert_allclose(s.numpy(), np_similarity(std), atol=1e-6)
    np.testing.assert_allclose(s.numpy(), np_similarity(x.numpy()), atol=1e-6)
    # std_pool off, C <= 3 or H == 1: flattened
    for t, pool in [(x, False), (x[:, :3], True), (torch.randn(4, 5, 1, 6, generator=gen), True)]:
        np.testing.assert_allclose(
            predsim.similarity_matrix(t, std_pool=pool).numpy(), np_similarity(t.numpy().reshape(4, -1)), atol=1e-6
        )
    assert not torch.allclose(predsim.similarity_matrix(x, std_pool=False), s)


@pytest.mark.parametrize("num_classes", [4, 10])
def test_label_similarity_is_one_or_minus_one_over_k_minus_one(num_classes):
    labels = torch.tensor([0, 1, 0, 2, 3, 3, 1])
    s = predsim.label_similarity(labels, num_classes).numpy()
    same = labels[:, None] == labels[None, :]
    expected = np.where(same.numpy(), 1.0, -1.0 / (num_classes - 1))
    np.testing.assert_allclose(s, expected, atol=1e-6)
    onehot = np.eye(num_classes)[labels.numpy()]
    np.testing.assert_allclose(s, np_similarity(onehot), atol=1e-6)


@pytest.mark.parametrize("four_d", [False, True])
def test_predsim_loss_matches_numpy(four_d):
    gen = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 2, 1, 2, 0, 1])
    k, beta = 3, 0.9
    sim_input = torch.randn(6, 5, 4, 4, generator=gen) if four_d else torch.randn(6, 7, generator=gen)
    logits = torch.randn(6, k, generator=gen)
    loss, sim, pred = predsim.predsim_loss(sim_input, logits, labels, k, beta=beta)
    s_h = np_similarity(sim_input.numpy())
    s_y = np_similarity(np.eye(k)[labels.numpy()])
    np_sim = float(((s_h - s_y) ** 2).sum() / 36)  # mean over the B^2 entries
    np_pred = np_cross_entropy(logits.numpy(), labels.numpy())
    assert sim.item() == pytest.approx(np_sim, rel=1e-5, abs=1e-7)
    assert pred.item() == pytest.approx(np_pred, rel=1e-5)
    assert loss.item() == pytest.approx((1 - beta) * np_pred + beta * np_sim, rel=1e-5)
    # default beta 0.99
    loss99, _, _ = predsim.predsim_loss(sim_input, logits, labels, k)
    assert loss99.item() == pytest.approx(0.01 * np_pred + 0.99 * np_sim, rel=1e-5)


def test_sim_loss_gradient_flows_only_into_sim_input():
    x = torch.randn(6, 4, requires_grad=True)
    logits = torch.randn(6, 3, requires_grad=True)
    _, sim, _ = predsim.predsim_loss(x, logits, torch.tensor([0, 1, 2, 0, 1, 2]), 3)
    sim.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and logits.grad is None


# ---------------------------------------------------------------- decoder pooling


@pytest.mark.parametrize(
    "c,h,w,dim,kernel,features",
    [
        (256, 32, 32, 2048, (16, 8), 2048),  # docs/methods/predsim.md#11-one-local-loss-block's example
        (128, 32, 32, 2048, (8, 8), 2048),  # vgg8b conv1, C10 recipe
        (128, 16, 16, 4096, (4, 2), 4096),  # resnet18 stage-2 first block at its REAL 16x16 output (1.6 item 5)
        (512, 4, 4, 4096, (2, 1), 4096),
        (512, 2, 2, 2048, (1, 1), 2048),  # already small enough: no pooling
        (4, 7, 7, 16, (4, 4), 16),  # odd size: ceil(7/4) = 2 via zero padding
    ],
)
def test_decoder_pool_size(c, h, w, dim, kernel, features):
    k, _ = predsim.decoder_pool_size(c, h, w, dim)
    assert k == kernel
    aux = predsim.Aux((c, h, w), 10, dim)
    assert aux.decoder.in_features == features <= dim
    assert aux.decoder.weight.abs().sum() == 0
    sim_in, logits = aux(torch.randn(2, c, h, w))
    assert sim_in.shape == (2, c, h, w) and logits.shape == (2, 10)


def test_full_width_vgg8b_decoders_fit():
    model = build_model({"base": "vgg8b"}, 3, 10, 32, MA_VGG)
    ps = predsim.PredSim(model, 10, cfg_for(dim_in_decoder=2048))
    assert [a.decoder.in_features for a in ps.aux] == [2048] * 6 + [1024]
    assert isinstance(ps.aux[-1].sim, torch.nn.Linear) and ps.aux[-1].sim.weight.shape == (1024, 1024)
    assert ps.aux[-1].sim.bias is None and ps.aux[0].sim.bias is None


# ---------------------------------------------------------------- decomposition and optimizers


@pytest.mark.parametrize("base,units", [("vgg8b", 7), ("resnet18", 17), ("resnet50", 49)])
def test_units_and_optimizer_partition(base, units):
    torch.manual_seed(0)
    model = build(base)
    n_params = sum(p.numel() for p in model.parameters())
    ps = predsim.PredSim(model, 10, cfg_for())
    assert len(ps.units) == units
    # the aux modules are not part of the model
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert not any(m is a for m in model.modules() for a in ps.aux.modules())
    groups = {name: {id(p) for g in opt.param_groups for p in g["params"]} for name, opt in ps.optimizers()}
    all_ids = [i for ids in groups.values() for i in ids]
    assert len(all_ids) == len(set(all_ids)), "optimizers share a parameter"
    expected = {id(p) for p in model.parameters()} | {id(p) for p in ps.aux.parameters()}
    assert set(all_ids) == expected
    for u, aux in zip(ps.units, ps.aux):
        assert groups[u.name] == {id(p) for p in u.params} | {id(p) for p in aux.parameters()}
        if u.shortcut_params:
            assert groups[f"{u.name}.shortcut"] == {id(p) for p in u.shortcut_params}
    assert groups["output"] == {id(p) for p in model.head[-1].parameters()}
    assert model.head[-1].weight.abs().sum() == 0  # zero-initialised output layer
    if base.startswith("resnet"):  # every stride-2 stage start has a projection shortcut with its own Adam
        assert sum(1 for name in groups if name.endswith(".shortcut")) == 3 + (base == "resnet50")


def test_every_bottleneck_conv_is_a_unit_with_a_3x3_similarity_conv_as_the_code_builds_it():
    """N&E's Bottleneck: conv1 (1x1), conv2 (3x3) and conv3 (1x1) are each a LocalLossBlockConv, whose similarity
    branch is a 3x3 C x C conv whatever the unit's own kernel (bench/grids/ma.yaml quotes the lines)."""
    torch.manual_seed(0)
    model = build("resnet50")
    ps = predsim.PredSim(model, 10, cfg_for())
    by_name = dict(zip((u.name for u in ps.units), ps.aux))
    block = next(i for i, b in enumerate(model.blocks) if sum(isinstance(m, torch.nn.Conv2d) for m in b.modules()) >= 3)
    convs = [m for m in model.blocks[block].modules() if isinstance(m, torch.nn.Conv2d)][:3]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (1, 1)]
    for j, conv in enumerate(convs):
        sim = by_name[f"block{block}.conv{j}"].sim
        assert sim.kernel_size == (3, 3) and sim.in_channels == sim.out_channels == conv.out_channels
    # the kernel is a parameter (a 1x1 branch keeps the map's size too); an even kernel is refused
    ones = predsim.PredSim(build("resnet50"), 10, cfg_for(similarity_kernel=1))
    assert all(a.sim.kernel_size == (1, 1) for a in ones.aux if isinstance(a.sim, torch.nn.Conv2d))
    with pytest.raises(BenchError, match="similarity_kernel 2"):
        predsim.options({"method_options": {"similarity_kernel": 2}})


def _forward_to(ps, j, x, y):
    """Inputs (x, skip) of unit j, computed without gradient."""
    skip = x
    with torch.no_grad():
        for u in ps.units[:j]:
            if u.starts_block:
                skip = x
            x, _, _, _ = ps.unit_loss(u, x, skip, y)
    if ps.units[j].starts_block:
        skip = x
    return x, skip


@pytest.mark.parametrize(
    "base,unit",
    [("resnet18", "block3.conv1"), ("resnet50", "block2.conv2"), ("vgg8b", "head.fc0"), ("vgg8b", "block3")],
)
def test_gradients_never_cross_a_detached_boundary(base, unit):
    torch.manual_seed(0)
    model = build(base)
    ps = predsim.PredSim(model, 10, cfg_for())
    model.train()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    j = [u.name for u in ps.units].index(unit)
    xj, skip = _forward_to(ps, j, x, y)
    out, loss, _, _ = ps.unit_loss(ps.units[j], xj, skip, y)
    assert not out.requires_grad
    for p in list(model.parameters()) + list(ps.aux.parameters()):
        p.grad = None
    loss.backward()
    mine = {id(p) for p in ps.units[j].params + ps.units[j].shortcut_params} | {id(p) for p in ps.aux[j].parameters()}
    for i, u in enumerate(ps.units):
        for p in u.params + list(ps.aux[i].parameters()):
            if id(p) not in mine:
                assert p.grad is None, f"{u.name} got a gradient from {unit}'s loss"
    assert all(p.grad is None for p in model.head[-1].parameters())
    assert all(p.grad is not None for p in ps.units[j].params + ps.units[j].shortcut_params)
    if unit == "block3.conv1":  # the projection shortcut is trained by this loss
        assert ps.units[j].shortcut_params and ps.units[j].shortcut_params[0].grad.abs().sum() > 0


@pytest.mark.parametrize("base", ["vgg8b", "resnet18"])
def test_one_step_changes_every_unit_and_output_gradient_is_plain_ce(base):
    torch.manual_seed(0)
    model = build(base)
    ps = predsim.PredSim(model, 10, cfg_for())
    ps.train()
    reference = copy.deepcopy(model)  # pre-step weights (output weight already zeroed)
    before = [
        [p.detach().clone() for p in u.params + u.shortcut_params + list(a.parameters())]
        for u, a in zip(ps.units, ps.aux)
    ]
    out_before = [p.detach().clone() for p in model.head[-1].parameters()]
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 10
    torch.manual_seed(5)
    r = ps.train_step(x, y)
    assert r.sim_losses.shape == r.pred_losses.shape == (len(ps.units),)
    for u, a, old in zip(ps.units, ps.aux, before):
        new = u.params + u.shortcut_params + list(a.parameters())
        for p, q in zip(new, old):
            if p.dim() > 1:  # every weight (main conv/linear, shortcut, sim, decoder) moved
                assert not torch.equal(p, q), f"{u.name}: a weight did not change"
        assert any(not torch.equal(p, q) for p, q in zip(new, old))
    assert all(not torch.equal(p, q) for p, q in zip(model.head[-1].parameters(), out_before))
    # the output layer's gradient is exactly that of CE on the (pre-step) features: the same dropout masks come
    # from the same seed, the same BN batch statistics from train mode
    reference.train()
    torch.manual_seed(5)
    feats = x
    for block in reference.blocks:
        feats = block(feats)
    feats = reference.head[:-1](feats).detach()
    ce = F.cross_entropy(reference.head[-1](feats), y)
    ce.backward()
    assert ce.item() == pytest.approx(r.output_loss.item(), rel=1e-5)
    torch.testing.assert_close(model.head[-1].weight.grad, reference.head[-1].weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.head[-1].bias.grad, reference.head[-1].bias.grad, rtol=1e-4, atol=1e-6)


def test_output_loss_scale_one_minus_beta():
    model = build("vgg8b")
    y = torch.tensor([0, 1, 2, 3])
    for scale, factor in [("none", 1.0), ("one_minus_beta", 0.01)]:
        ps = predsim.PredSim(model, 10, cfg_for(output_loss_scale=scale))
        h = torch.randn(4, ps.out_layer.in_features)
        _, ce, loss = ps.output_loss(h, y)
        assert loss.item() == pytest.approx(factor * ce.item())


@pytest.mark.parametrize("base,size", [("vgg8b", 32), ("resnet18", 32), ("resnet50", 32), ("resnet18", 16)])
def test_architectures_train_and_forward(base, size):
    torch.manual_seed(0)
    model = build(base, size=size)
    ps = predsim.PredSim(model, 10, cfg_for())
    ps.train()
    x, y = torch.randn(8, 3, size, size), torch.arange(8) % 10
    for _ in range(2):
        r = ps.train_step(x, y)
    assert torch.isfinite(r.sim_losses).all() and torch.isfinite(r.pred_losses).all()
    model.eval()
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (8, 10)
        torch.testing.assert_close(ps.forward_units(x), logits)  # the units compose to the plain forward


# ---------------------------------------------------------------- options and the whole method


def test_options_defaults_and_errors():
    assert predsim.options({"method_options": {}}) == predsim.DEFAULTS
    assert predsim.options({"method_options": {"schedule": "sequential"}})["schedule"] == "sequential"
    with pytest.raises(
        BenchError,
        match=r"predsim schedule 'alternating': expected one of \['simultaneous', "
        r"'sequential'\]",
    ):
        predsim.options({"method_options": {"schedule": "alternating"}})
    with pytest.raises(BenchError, match="unknown predsim method_options"):
        predsim.options({"method_options": {"betta": 0.5}})
    with pytest.raises(BenchError, match="output_loss_scale"):
        predsim.options({"method_options": {"output_loss_scale": "half"}})


def test_train_learns_and_logs():
    """Tiny VGG8b (16 px, width 1/16; no dropout, which at 8-32 channels slows such a short run a lot), 3 epochs
    of 24 batches: the output layer, trained only on the locally learnt features, gets far above chance. (With
    fewer steps the test accuracy can sit at chance while training accuracy is high: BN running statistics lag;
    backprop does the same.)"""
    torch.manual_seed(0)
    data = separable(384, 128, shuffle=True, signal=0.7)
    model = build("vgg8b", size=16, num_classes=4, dropout=0.0)
    records = []
    cfg = cfg_for(epochs=3, batch_size=16, lr=1e-3)
    final = predsim.train(model, data, cfg, Context(torch.device("cpu"), 0, records.append, progress=False))
    assert [r["epoch"] for r in records] == [1, 2, 3]
    keys = {
        "epoch",
        "lr",
        "train_loss",
        "train_accuracy",
        "local_sim_loss",
        "local_pred_loss",
        "test_loss",
        "test_accuracy",
        "epoch_time_s",
        "eval_time_s",
    }
    assert set(records[0]) == keys
    assert [r["lr"] for r in records] == pytest.approx([1e-3, 1e-3, 2.5e-4])  # milestone 2, gamma 0.25
    for key in ("test_accuracy", "test_error", "test_loss", "train_time_s", "local_sim_loss", "local_pred_loss"):
        assert key in final and np.isfinite(final[key])
    assert final["train_time_s"] == pytest.approx(sum(r["epoch_time_s"] for r in records))
    assert records[-1]["local_sim_loss"] < records[0]["local_sim_loss"]
    assert final["test_accuracy"] > 60.0, final  # chance is 25 %


# ---------------------------------------------------------------- schedule "sequential" (Ma's Algorithm 1)

SIMULTANEOUS_KEYS = {
    "epoch",
    "lr",
    "train_loss",
    "train_accuracy",
    "local_sim_loss",
    "local_pred_loss",
    "test_loss",
    "test_accuracy",
    "epoch_time_s",
    "eval_time_s",
}


def test_sequential_stage_epochs_and_milestones():
    from bench.methods.schedule import predsim_stage_epochs, stage_epochs

    assert predsim_stage_epochs(400, 7) == [50] * 8  # Ma's 400 epochs over vgg8b's 7 units and the output layer
    assert predsim_stage_epochs(400, 17) == [22] * 14 + [23] * 4  # the remainder to the last stages
    assert predsim_stage_epochs(20, 7) == [2] * 4 + [3] * 4
    assert predsim_stage_epochs(5, 7) == [1] * 8  # fewer epochs than stages: one each
    seq = {"epochs": 20, "method_options": {"schedule": "sequential"}}
    assert stage_epochs("predsim", seq, 4, n_units=7) == [2] * 4 + [3] * 4
    with pytest.raises(ValueError, match="n_units"):
        stage_epochs("predsim", seq, 4)
    assert stage_epochs("predsim", {"epochs": 20, "method_options": {}}, 4) == [20]
    # Ma's 50/75/89/94 % of 400 epochs, in a stage of 50: 25, 37.5 -> 38, 44.5 -> 44, 47
    assert predsim.stage_milestones([200, 300, 356, 376], 400, 50) == [25, 38, 44, 47]
    assert predsim.stage_milestones([10, 15], 20, 3) == [2, 2]  # both in the stage's last epoch: decays twice
    assert predsim.stage_milestones([10, 15], 20, 2) == [1]  # 15 -> 2: the stage's end, dropped
    assert predsim.stage_milestones([1, 19], 20, 2) == []  # 0 and the end: dropped
    assert [predsim.stage_until(u, 16, 2) for u in (0, 8, 2, 16)] == [0, 1, 1, 2]


def _unit_state(ps, j):
    """Unit j's parameters and buffers (its shortcut's included) and its aux modules' parameters, cloned."""
    mods = ps.units[j].modules() + [ps.aux[j]]
    return [t.detach().clone() for m in mods for t in (*m.parameters(), *m.buffers())]


def test_sequential_trains_one_unit_per_stage_on_the_frozen_units_before_it(monkeypatch):
    """Tiny VGG8b (7 units, 8 stages) over 20 epochs (2, 2, 2, 2, 3, 3, 3, 3), LR milestones 10 and 15: in every
    epoch only the unit of its stage changes (parameters, BN statistics, its aux modules; the output layer only in
    the last stage), the units before it run in eval mode without gradient, the units after it do not run, and
    every stage has its own LR schedule (milestones mapped into it)."""
    torch.manual_seed(0)
    data = separable(16, 8, shuffle=True)
    model = build("vgg8b", size=16, num_classes=4)
    cfg = {**cfg_for(epochs=20, batch_size=8, lr=1e-3, schedule="sequential"), "lr_milestones": [10, 15]}
    seen = {}  # epoch's stage -> {unit: (grad enabled, training)} for every unit that ran in a training step
    stage_now = []
    step = predsim.PredSim.stage_step

    def stage_step(self, stage, x, y):
        if not hasattr(self, "hooked"):
            self.hooked = True

            def ran(j):
                def hook(module, inputs, output):  # records how unit j ran in a training step (not in evaluate)
                    if stage_now:
                        seen.setdefault(stage_now[-1], {}).setdefault(j, set()).add(
                            (torch.is_grad_enabled(), module.training)
                        )

                return hook

            for j, u in enumerate(self.units):
                u.pre.mods[0].register_forward_hook(ran(j))
        stage_now.append(stage)
        try:
            return step(self, stage, x, y)
        finally:
            stage_now.pop()

    snapshots, trainer = [], []
    modes = predsim.PredSim.stage_modes

    def snapshot(ps):
        units = [_unit_state(ps, j) for j in range(len(ps.units))]
        return units, [p.detach().clone() for p in ps.out_layer.parameters()]

    def stage_modes(self, stage):  # called at the start of every epoch: what the model was before it
        snapshots.append(snapshot(self))
        trainer[:] = [self]
        return modes(self, stage)

    monkeypatch.setattr(predsim.PredSim, "stage_step", stage_step)
    monkeypatch.setattr(predsim.PredSim, "stage_modes", stage_modes)
    records = []
    final = predsim.train(model, data, cfg, Context(torch.device("cpu"), 0, records.append, progress=False))

    stages = [int(r["stage"]) for r in records]
    assert stages == [s for s, k in enumerate([2, 2, 2, 2, 3, 3, 3, 3]) for _ in range(k)]
    assert len(records) == cfg["epochs"] and [r["epoch"] for r in records] == list(range(1, 21))
    assert [int(r["stage_epoch"]) for r in records] == [e for k in [2] * 4 + [3] * 4 for e in range(1, k + 1)]
    # each stage's own schedule: 2-epoch stages decay at 1 (10 -> 1; 15 -> 2, the end), 3-epoch ones twice at 2
    for r in records:
        k = 2 if r["stage"] < 4 else 3
        expected = 1e-3 * (0.25 if k == 2 and r["stage_epoch"] == 2 else 0.0625 if r["stage_epoch"] == 3 else 1)
        assert r["lr"] == pytest.approx(expected), r
    # what changed in each epoch: the stage's unit only (its parameters, BN statistics and aux), or the output layer
    n_units = 7
    for epoch, (before, after) in enumerate(zip(snapshots, snapshots[1:] + [snapshot(trainer[0])])):
        stage = stages[epoch]
        for j in range(n_units):
            same = all(torch.equal(a, b) for a, b in zip(before[0][j], after[0][j]))
            assert same == (j != stage), f"epoch {epoch + 1} (stage {stage}): unit {j} changed: {not same}"
        out_same = all(torch.equal(a, b) for a, b in zip(before[1], after[1]))
        assert out_same == (stage != n_units), f"epoch {epoch + 1}: the output layer changed: {not out_same}"
    # the units before the stage's run frozen (no gradient, eval mode), its unit in training mode, none after it
    for stage in range(n_units + 1):
        ran = seen[stage]
        assert sorted(ran) == list(range(min(stage + 1, n_units))), (stage, sorted(ran))
        for j, how in ran.items():
            assert how == ({(True, True)} if j == stage else {(False, False)}), (stage, j, how)
    # the records' and the final metrics' keys are those of the simultaneous schedule (and the stage)
    assert all(set(r) == SIMULTANEOUS_KEYS | {"stage", "stage_epoch"} for r in records)
    simultaneous = predsim.train(
        build("vgg8b", size=16, num_classes=4),
        data,
        cfg_for(epochs=1, batch_size=8),
        Context(torch.device("cpu"), 0, progress=False),
    )
    assert set(final) == set(simultaneous)
    assert all(np.isfinite(v) for v in final.values())
    assert final["train_time_s"] == pytest.approx(sum(r["epoch_time_s"] for r in records))
    assert final["local_units"] == n_units and final["train_loss"] == records[-1]["train_loss"]
    # the output stage reports the units' local losses at the end of their stages, averaged
    last = [r for r in records if r["stage_epoch"] == (2 if r["stage"] < 4 else 3) and r["stage"] < n_units]
    assert final["local_sim_loss"] == pytest.approx(np.mean([r["local_sim_loss"] for r in last]))
    assert final["local_pred_loss"] == pytest.approx(np.mean([r["local_pred_loss"] for r in last]))


def test_sequential_samples_classes_in_every_stage_like_the_run(monkeypatch):
    """classes_per_batch with schedule sequential: classes_per_batch_until_epoch 8 of 16 epochs is mapped into every
    2-epoch stage as its first epoch: class-sampled batches (2 classes of 8) in every stage's first epoch, uniform
    batches in its second."""
    seen = []  # (stage, labels) per training step
    step = predsim.PredSim.stage_step

    def recording(self, stage, x, y):
        seen.append((stage, y.clone()))
        return step(self, stage, x, y)

    monkeypatch.setattr(predsim.PredSim, "stage_step", recording)
    data = separable(48, 8, classes=8, size=16, shuffle=True)
    torch.manual_seed(0)
    model = build("vgg8b", size=16, num_classes=8)
    cfg = cfg_for(epochs=16, batch_size=16, schedule="sequential", classes_per_batch=2, classes_per_batch_until_epoch=8)
    records = []
    predsim.train(model, data, cfg, Context(torch.device("cpu"), 0, records.append, progress=False))
    assert [int(r["stage_epoch"]) for r in records] == [1, 2] * 8
    epochs, at = [], 0
    for r in records:  # the steps of each epoch: its samples add up to the training set
        batch = []
        while sum(len(y) for _, y in batch) < 48:
            batch.append(seen[at])
            at += 1
        assert {s for s, _ in batch} == {int(r["stage"])}
        epochs.append([y for _, y in batch])
    assert at == len(seen)
    for r, labels in zip(records, epochs):
        if r["stage_epoch"] == 1:  # at most 2 classes a batch (a last batch of <= 3 may take a lone sample)
            assert all(len(y.unique()) <= 2 or (len(y) <= 3 and len(y.unique()) == 3) for y in labels), r
        else:
            assert [len(y) for y in labels] == [16] * 3 and max(len(y.unique()) for y in labels) > 2, r
