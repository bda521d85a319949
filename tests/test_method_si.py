"""Karimi's SI forward learning (si_forward) and the forward-backward SI proxy (fb_si): the Separation Index, the
triplet loss of Eq. 7-8, what each stage may change, the frozen-prefix cache, and that the methods learn."""

import math

import numpy as np
import pytest
import torch
from helpers import Watch, separable
from helpers import cpu_context as ctx

from bench.data.tensors import TensorData
from bench.methods import Diverged, fb_si, si
from bench.methods import layerwise as lw
from bench.models import build_model

TINY = 1 / 16
VGG = {
    "nonlinearity": "relu",
    "bn": True,
    "dropout": 0.0,
    "conv_bias": True,
    "head_pool": "flatten",
    "head_hidden": [],
    "width_mult": TINY,
}


# the SI loss as a mean over anchors on unit-norm features: bounded, so the structural tests do not diverge (the
# literal Eq. 7, a sum on raw features, drives the feature norms of these tiny nets to infinity within a few epochs)
STABLE = {"loss_reduction": "mean", "normalize_features": True}


def cfg_for(lr=0.01, optimizer="sgd", batch_size=16, epochs=1, augment=False, **method_options):
    return {
        "epochs": epochs,
        "lr": lr,
        "optimizer": optimizer,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "batch_size": batch_size,
        "lr_milestones": [],
        "lr_gamma": 0.1,
        "eval_batch_size": 32,
        "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3},
        "augment": {"crop_padding": 2 if augment else 0, "hflip": augment},
        "experiment": "test-si",
        "method_options": method_options,
    }


# ---------------------------------------------------------------- Separation Index (Eq. 1)


def test_separation_index_by_hand():
    # on a line: 0 and 1 are each other's neighbours (same label); 5 <-> 6 differ; 10's nearest is 6 (label 0)
    z = torch.tensor([[0.0], [1.0], [5.0], [6.0], [10.0]])
    assert si.separation_index(z, torch.tensor([0, 0, 1, 0, 1])) == pytest.approx(2 / 5)
    # a tie: point 0 is at distance 1 from points 1 (same label) and 2 (other): the first index wins
    z = torch.tensor([[0.0], [1.0], [-1.0]])
    assert si.separation_index(z, torch.tensor([0, 0, 1])) == pytest.approx(2 / 3)
    # flattened features: 2x2 "maps"
    z = torch.tensor(
        [[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.1], [0.0, 0.0]], [[5.0, 5.0], [5.0, 5.0]], [[5.0, 5.0], [5.0, 5.2]]]
    )
    assert si.separation_index(z, torch.tensor([1, 1, 2, 2])) == 1.0
    assert si.separation_index(z, torch.tensor([1, 2, 1, 2])) == 0.0


def test_separation_index_matches_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 2, 3, 2)).astype(np.float32)
    labels = rng.integers(0, 3, 60)
    flat = z.reshape(60, -1).astype(np.float64)
    d = np.sqrt(((flat[:, None, :] - flat[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    expected = float(np.mean(labels[d.argmin(1)] == labels))
    assert si.separation_index(torch.from_numpy(z), torch.from_numpy(labels)) == pytest.approx(expected)


# ---------------------------------------------------------------- the triplet loss (Eq. 7-8)

POINTS = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [10.0, 10.0]]
LABELS = [0, 0, 1, 1, 2]
# chosen by hand: (anchor, nearest same-label, nearest other-label); point 4 has no same-label partner: skipped
TRIPLETS = [(0, 1, 2), (1, 0, 2), (2, 3, 0), (3, 2, 1)]


def numpy_loss_and_grad(points, triplets):
    z = np.array(points, dtype=np.float64)
    loss, grad = 0.0, np.zeros_like(z)
    for a, p, n in triplets:
        loss += ((z[a] - z[p]) ** 2).sum() - ((z[a] - z[n]) ** 2).sum()
        grad[a] += 2 * (z[a] - z[p]) - 2 * (z[a] - z[n])
        grad[p] += -2 * (z[a] - z[p])
        grad[n] += 2 * (z[a] - z[n])
    return loss, grad


def test_triplet_loss_value_and_gradient():
    z = torch.tensor(POINTS, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(LABELS)
    loss = si.si_triplet_loss(z, labels, "sum")
    expected, grad = numpy_loss_and_grad(POINTS, TRIPLETS)
    assert expected == -4.0  # (1-4) + (1-5) + (10-4) + (10-13)
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    np.testing.assert_allclose(z.grad.numpy(), grad)
    assert torch.all(z.grad[4] == 0)  # never an anchor, positive or negative
    terms, used = si.si_triplet_terms(z.detach(), labels)
    assert used.tolist() == [True, True, True, True, False]
    mean = si.si_triplet_loss(z.detach(), labels, "mean")
    assert mean.item() == pytest.approx(expected / 4)  # over the 4 anchors used, not the 5 points
    with pytest.raises(ValueError):
        si.si_triplet_loss(z, labels, "max")


def test_hinge_keeps_only_the_anchors_si_counts_wrong():
    # by hand (TRIPLETS): terms (1-4), (1-5), (10-4), (10-13); only anchor 2 (nearest point 0 has another label,
    # so SI counts it wrong) has d_p > d_n
    z = torch.tensor(POINTS, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(LABELS)
    loss = si.si_triplet_loss(z, labels, "sum", hinge=True)
    assert loss.item() == pytest.approx(6.0)
    assert si.si_triplet_loss(z.detach(), labels, "mean", hinge=True).item() == pytest.approx(6.0 / 4)
    loss.backward()
    _, grad = numpy_loss_and_grad(POINTS, [(2, 3, 0)])
    np.testing.assert_allclose(z.grad.numpy(), grad)
    terms = si.triplet_terms(z[:2], z[1:3], z[2:4], hinge=True)
    assert terms.tolist() == [0.0, 0.0]  # (1 - 4) and (5 - 13) below zero: no push
    assert si.triplet_terms(z[:2], z[1:3], z[2:4]).tolist() == [-3.0, -8.0]


def test_hinge_is_applied_in_both_neighbour_modes():
    z = torch.tensor(POINTS, dtype=torch.float64)
    for neighbours in ("data", "batch"):
        torch.manual_seed(0)
        records = []
        si.train(
            lenet(),
            separable(),
            cfg_for(epochs_per_layer=1, **STABLE, hinge=True, neighbours=neighbours, si_eval_samples=0),
            ctx(records),
        )
        assert all(r["train_loss"] >= 0 for r in records if r["stage"] < 4), neighbours
        assert si.check_si_options({**si.DEFAULTS, "hinge": 1}, "si_forward")["hinge"] is True
    assert si.triplet_terms(z[:1], z[1:2], z[2:3], hinge=False).item() == -3.0


def test_triplet_gradient_reaches_positive_and_negative_only_points():
    # point 2 is alone in its class: skipped as an anchor, but the negative of anchors 0 and 1
    pts = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]
    z = torch.tensor(pts, dtype=torch.float64, requires_grad=True)
    loss = si.si_triplet_loss(z, torch.tensor([0, 0, 1]))
    expected, grad = numpy_loss_and_grad(pts, [(0, 1, 2), (1, 0, 2)])
    assert loss.item() == pytest.approx(expected) and expected == -7.0
    loss.backward()
    np.testing.assert_allclose(z.grad.numpy(), grad)
    assert z.grad[2].tolist() == [2.0, -8.0]


def test_triplet_loss_without_pairs_is_zero():
    z = torch.randn(4, 3, requires_grad=True)
    for labels in (torch.zeros(4, dtype=torch.long), torch.arange(4)):  # no negatives / no positives
        terms, used = si.si_triplet_terms(z, labels)
        assert not used.any()
        loss = si.si_triplet_loss(z, labels, "mean")
        assert loss.item() == 0.0
        loss.backward()  # a graph exists, with zero gradient
        assert torch.all(z.grad == 0)


# ---------------------------------------------------------------- stages: what may change


def lenet(size=16, classes=4, bn=True):
    return build_model({"base": "lenet"}, 3, classes, size, {"bn": bn, "width_mult": 0.5})


def test_si_forward_stages_touch_only_their_block(monkeypatch):
    torch.manual_seed(0)
    model = lenet()
    watch = Watch(model, monkeypatch)
    records = []
    out = si.train(
        model, separable(), cfg_for(epochs_per_layer=1, classifier_epochs=1, **STABLE, si_eval_samples=24), ctx(records)
    )
    assert watch.stage_names() == [["blocks.0"], ["blocks.1"], ["blocks.2"], ["blocks.3"], ["head.bias", "head.weight"]]
    assert all(o["extra"] == 0 and o["fresh"] for o in watch.optimizers)
    assert watch.steps == 5 * 3  # 48 samples / 16 per batch, one epoch per stage
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["layer"] for r in records] == [0, 1, 2, 3, 4]
    for key in ("train_loss", "train_loss_sum", "train_loss_mean", "feature_norm", "si", "prefix_time_s"):
        assert key in records[0]
    assert "si_layer0" in records[3] and "si_layer3" in records[3]
    assert {
        "test_accuracy",
        "test_error",
        "test_loss",
        "train_time_s",
        "si_final",
        "si_layer3",
        "prefix_cache_saved_s",
    } <= set(out)
    assert all(p.requires_grad for p in model.parameters())  # restored


def test_feature_blocks_leaves_the_rest_to_the_classifier_stage(monkeypatch):
    torch.manual_seed(0)
    model = lenet()
    watch = Watch(model, monkeypatch)
    out = si.train(
        model, separable(), cfg_for(epochs_per_layer=1, **STABLE, si_eval_samples=16, feature_blocks=2), ctx()
    )
    assert watch.stage_names() == [["blocks.0"], ["blocks.1"], ["blocks.2", "blocks.3", "head.bias", "head.weight"]]
    assert "si_layer1" in out and "si_layer2" not in out


def test_fb_si_trains_block0_by_si_then_the_rest_end_to_end(monkeypatch):
    torch.manual_seed(0)
    model = lenet()
    watch = Watch(model, monkeypatch)
    cfg = cfg_for(epochs=2, epochs_per_layer=1, **STABLE, si_eval_samples=0)
    cfg["lr_milestones"] = [1]
    records = []
    fb_si.train(model, separable(), cfg, ctx(records))
    names = watch.stage_names()
    assert names[0] == ["blocks.0"]
    assert names[1] == ["blocks.1", "blocks.2", "blocks.3", "head.bias", "head.weight"]
    assert len(watch.optimizers) == 2
    assert [r["lr"] for r in records] == pytest.approx([0.01, 0.01, 0.001])  # the E2E schedule, in place


def test_cache_prefix_is_exact_without_augmentation():
    def run(cache):
        torch.manual_seed(0)
        model = build_model({"base": "vgg11"}, 3, 4, 32, VGG)
        cfg = cfg_for(epochs_per_layer=1, classifier_epochs=2, **STABLE, si_eval_samples=0, cache_prefix=cache)
        out = si.train(model, separable(n_train=40, n_test=16, size=32), cfg, ctx(seed=3))
        return model, out

    cached, out_cached = run(True)
    plain, out_plain = run(False)
    assert out_cached["prefix_cache"] == 1 and out_cached["prefix_cached_stages"] == 8
    assert out_plain["prefix_cache"] == 0 and out_plain["prefix_cached_stages"] == 0
    for (k, a), b in zip(cached.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), k
    assert out_cached["test_loss"] == out_plain["test_loss"]


def test_cache_is_not_used_with_augmentation():
    torch.manual_seed(0)
    records = []
    out = si.train(
        lenet(), separable(), cfg_for(augment=True, epochs_per_layer=1, **STABLE, si_eval_samples=0), ctx(records)
    )
    assert out["prefix_cache"] == lw.CACHE_NOT_EXACT
    assert records[0]["prefix_cache"] == lw.CACHE_OFF  # block 0 has no prefix
    assert all(r["prefix_cache"] == lw.CACHE_NOT_EXACT for r in records[1:])


def test_cache_too_large_falls_back():
    torch.manual_seed(0)
    out = si.train(
        lenet(), separable(), cfg_for(epochs_per_layer=1, **STABLE, si_eval_samples=0, prefix_cache_max_mb=1e-6), ctx()
    )
    assert out["prefix_cache"] == lw.CACHE_TOO_LARGE and out["prefix_cached_stages"] == 0


# ---------------------------------------------------------------- learning, text, divergence, options


def test_si_forward_learns_a_separable_set():
    torch.manual_seed(0)
    data = separable(n_train=64, n_test=64)
    out = si.train(lenet(), data, cfg_for(epochs_per_layer=3, classifier_epochs=5, **STABLE, si_eval_samples=64), ctx())
    assert out["test_accuracy"] > 60  # chance: 25
    assert out["si_final"] > 0.6


def test_fb_si_learns_a_separable_set():
    torch.manual_seed(0)
    out = fb_si.train(lenet(), separable(n_train=64, n_test=64), cfg_for(epochs=4, epochs_per_layer=2, **STABLE), ctx())
    assert out["test_accuracy"] > 60


def test_vdcnn_text_runs_through_si_forward():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    n, length = 24, 64
    y = torch.arange(n) % 2
    x = torch.randint(2, 69, (n, length), generator=gen, dtype=torch.uint8)
    x[y == 1, :8] = 5  # a class marker
    data = TensorData(x, y, x[:8].clone(), y[:8].clone(), 2, kind="text")
    model = build_model({"base": "vdcnn9"}, 1, 2, length, {"width_mult": TINY})
    cfg = cfg_for(batch_size=8, epochs_per_layer=1, classifier_epochs=1, **STABLE, si_eval_samples=16)
    cfg.pop("normalize")
    cfg["augment"] = {}
    records = []
    out = si.train(model, data, cfg, ctx(records))
    assert len(records) == len(model.blocks) + 1
    assert out["prefix_cached_stages"] == len(model.blocks)  # text is never augmented: every prefix cached
    assert 0.0 <= out["si_final"] <= 1.0 and "si_input" not in out


def test_non_finite_loss_raises_diverged():
    torch.manual_seed(0)
    model = lenet()
    with torch.no_grad():
        model.blocks[0][0].weight.fill_(float("nan"))
    records = []
    with pytest.raises(Diverged) as err:
        si.train(model, separable(), cfg_for(epochs_per_layer=2, si_eval_samples=0), ctx(records))
    assert err.value.epoch == 1 and len(records) == 1


def test_unknown_or_bad_options_are_errors():
    with pytest.raises(ValueError, match="unknown si_forward"):
        si.train(lenet(), separable(), cfg_for(epochs_per_layers=1), ctx())
    with pytest.raises(ValueError, match="loss_reduction"):
        si.train(lenet(), separable(), cfg_for(loss_reduction="avg"), ctx())
    with pytest.raises(ValueError, match="si_layers"):
        fb_si.train(lenet(), separable(), cfg_for(si_layers=9), ctx())


# ---------------------------------------------------------------- the forks: where neighbours come from, what trains


def brute_force_pairs(z: np.ndarray, labels: np.ndarray) -> tuple[list, list]:
    flat = z.reshape(len(z), -1).astype(np.float64)
    d = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(-1)
    pos, neg = [], []
    for i in range(len(z)):
        same = [j for j in range(len(z)) if labels[j] == labels[i] and j != i]
        other = [j for j in range(len(z)) if labels[j] != labels[i]]
        pos.append(min(same, key=lambda j: (d[i, j], j)) if same else -1)
        neg.append(min(other, key=lambda j: (d[i, j], j)) if other else -1)
    return pos, neg


def _points(n=41, shape=(2, 3), chunk=8, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, *shape)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    labels[n - 1] = 9  # a class of one: no positive partner
    chunks = [(torch.from_numpy(z[i : i + chunk]), torch.from_numpy(labels[i : i + chunk])) for i in range(0, n, chunk)]
    return z, labels, chunks


def _counting(chunks):
    """A re-readable source of `chunks` that counts how often it is read (each read a pass over the points)."""
    reads = []

    def source():
        reads.append(1)
        return iter(chunks)

    return source, reads


@pytest.mark.parametrize("rows,cols", [(4096, 16384), (7, 5), (3, 11)])
def test_data_pairs_are_eq8_over_the_whole_set(rows, cols):
    z, labels, chunks = _points()
    pos, neg = si.data_pairs(iter(chunks), torch.device("cpu"), block_rows=rows, block_cols=cols)
    expected_pos, expected_neg = brute_force_pairs(z, labels)
    assert pos.tolist() == expected_pos and neg.tolist() == expected_neg
    assert pos[40] == -1 and neg[40] >= 0


MIB = 2**-20  # budgets in MiB, as the option gives them: n * MIB is n bytes
BLOCKS = {"block_rows": 16, "block_cols": 16}  # one step at 64 dimensions: 11,136 bytes (si._step_bytes)


@pytest.mark.parametrize(
    "device_bytes,host_bytes,mode",
    [
        (1e9, 0, "held"),  # everything on the device
        (23000, 1e9, "held"),  # some on the device, the rest on the host
        (30000, 0, "streamed"),  # neither holds the 97 x 64 floats: panels of 32 points, read again per panel
        (23000, 0, "streamed"),  # panels of 16 points: more reads
    ],
)
def test_a_tiny_budget_spills_or_streams_and_finds_the_same_partners(device_bytes, host_bytes, mode):
    z, labels, chunks = _points(n=97, shape=(64,), chunk=8)
    expected = si.data_pairs(iter(chunks), torch.device("cpu"), **BLOCKS)  # held in memory
    assert [t.tolist() for t in expected] == list(brute_force_pairs(z, labels))
    source, reads = _counting(chunks)
    stats = {}
    pos, neg = si.data_pairs(
        source, torch.device("cpu"), device_bytes * MIB, host_mb=host_bytes * MIB, **BLOCKS, stats=stats
    )
    assert stats["mode"] == mode and stats["points"] == 97 and stats["dims"] == 64
    assert (stats["block_rows"], stats["block_cols"]) == (16, 16)  # the budget holds a step: the same tiles
    assert torch.equal(pos, expected[0]) and torch.equal(neg, expected[1])
    assert stats["peak_device_mb"] <= device_bytes * MIB
    if mode == "held":
        assert len(reads) == stats["passes"] == 1
        assert (stats["held_device_mb"] + stats["held_host_mb"]) * 2**20 == 97 * 64 * 4
        assert (stats["held_host_mb"] > 0) == (host_bytes > 0)
    else:  # the first read (labels), the first panel's rows, one read per panel
        assert stats["panels"] == math.ceil(97 / (32 if device_bytes == 30000 else 16))
        assert len(reads) == stats["passes"] == 2 + stats["panels"]


def test_a_budget_below_one_step_makes_the_tiles_smaller():
    z, labels, chunks = _points(n=41, shape=(2, 3), chunk=8)
    stats = {}
    pos, neg = si.data_pairs(_counting(chunks)[0], torch.device("cpu"), 600 * MIB, host_mb=0.0, stats=stats)
    assert stats["mode"] == "streamed" and stats["block_rows"] * stats["block_cols"] < 1024 * 4096
    assert (pos.tolist(), neg.tolist()) == brute_force_pairs(z, labels)


def test_a_streamed_search_needs_points_it_can_read_again():
    _, _, chunks = _points()
    with pytest.raises(ValueError, match="can be read only once"):
        si.data_pairs(iter(chunks), torch.device("cpu"), 600 * MIB, host_mb=0.0)
    with pytest.raises(ValueError, match="cannot hold a row panel"):
        si.data_pairs(_counting(chunks)[0], torch.device("cpu"), 100 * MIB, host_mb=0.0)


def test_near_ties_are_kept_in_every_mode():
    """Points whose distances differ in the last bits, and exact ties across tiles and panels: every mode gives the
    partners of the search held in memory (the first index among exact ties), as each computes every distance from
    the same row block and column tile."""
    base = torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [1.0, 1e-7], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [1.0, 0.0]]
    )
    z = torch.cat([base, base + 0.5, base, base * 1.0000001])  # repeats: exact ties in later tiles and panels
    labels = torch.tensor([0, 0, 0, 1, 0, 1, 1, 0] * 4)
    chunks = [(z[i : i + 5], labels[i : i + 5]) for i in range(0, len(z), 5)]
    blocks = {"block_rows": 3, "block_cols": 4}  # a step: 7 x 8 + 120 + 84 = 260 bytes
    expected = si.data_pairs(iter(chunks), torch.device("cpu"), **blocks)
    for device_bytes, host_bytes in ((1e9, 0), (700, 1e9), (800, 0), (650, 0)):
        stats = {}
        got = si.data_pairs(
            _counting(chunks)[0],
            torch.device("cpu"),
            device_bytes * MIB,
            host_mb=host_bytes * MIB,
            **blocks,
            stats=stats,
        )
        assert (stats["block_rows"], stats["block_cols"]) == (3, 4)
        assert [t.tolist() for t in got] == [t.tolist() for t in expected], (device_bytes, host_bytes, stats)


def test_a_run_whose_search_streams_trains_the_same_model(monkeypatch):
    """An si_forward run with a pair-search budget too small to hold the layer outputs: the searches stream,
    computing the outputs again through the frozen prefix, and the run trains exactly the same weights."""
    data = separable(n_train=64, n_test=32)
    cfg = cfg_for(epochs_per_layer=2, classifier_epochs=2, **STABLE, neighbours="data", si_eval_samples=0)
    cfg["eval_batch_size"] = 8  # the layer outputs read in chunks of 8
    modes = []
    real = si.data_pairs

    def recording(*args, stats=None, **kw):
        out = real(*args, stats=stats, **kw)
        modes.append(stats["mode"])
        return out

    monkeypatch.setattr(si, "data_pairs", recording)
    torch.manual_seed(0)
    held_model = lenet()
    held = si.train(held_model, data, cfg, ctx())
    assert set(modes) == {"held"}
    modes.clear()
    torch.manual_seed(0)
    streamed_model = lenet()
    # 48 KiB: less than the outputs of 64 samples and a step of each layer (LeNet here: 192 to 32 dimensions)
    cfg["method_options"]["pair_search_max_mb"] = 0.047
    streamed = si.train(streamed_model, data, cfg, ctx())
    assert modes[0] == "streamed"  # the first layer's 192 dimensions at least (the narrower layers may fit)
    assert streamed["pair_search_passes"] > held["pair_search_passes"] == len(held_model.blocks)
    for a, b in zip(held_model.state_dict().values(), streamed_model.state_dict().values()):
        assert torch.equal(a, b)
    assert streamed["test_accuracy"] == held["test_accuracy"]


def test_data_pairs_ties_go_to_the_first_index_across_blocks():
    z = torch.tensor([[0.0], [1.0], [-1.0], [1.0], [-1.0]])
    labels = torch.tensor([0, 0, 1, 0, 1])
    pos, neg = si.data_pairs(iter([(z, labels)]), torch.device("cpu"), block_rows=2, block_cols=2)
    assert pos[0] == 1 and neg[0] == 2  # 3 and 4 are as near, in later column blocks


def test_data_neighbours_search_once_per_layer_and_train_on_those_pairs(monkeypatch):
    calls = []
    real = si.data_pairs

    def counting(chunks, device, max_mb=8192.0, **kw):
        pos, neg = real(chunks, device, max_mb, **kw)
        calls.append(len(pos))
        return pos, neg

    monkeypatch.setattr(si, "data_pairs", counting)
    torch.manual_seed(0)
    data = separable(n_train=64, n_test=64)
    model = lenet()
    out = si.train(
        model,
        data,
        cfg_for(epochs_per_layer=3, classifier_epochs=5, **STABLE, neighbours="data", si_eval_samples=64),
        ctx(),
    )
    assert calls == [64] * len(model.blocks)  # Step 3 once per layer (not per epoch), over all 64 samples
    assert out["pair_search_time_s"] > 0
    assert out["test_accuracy"] > 60 and out["si_final"] > 0.6  # chance: 25


def test_batch_neighbours_never_search_the_data(monkeypatch):
    monkeypatch.setattr(si, "data_pairs", lambda *a, **k: pytest.fail("searched the data"))
    torch.manual_seed(0)
    out = si.train(
        lenet(), separable(), cfg_for(epochs_per_layer=1, **STABLE, neighbours="batch", si_eval_samples=0), ctx()
    )
    assert "pair_search_time_s" not in out


def test_data_pairs_with_augmentation_use_augmented_partners():
    torch.manual_seed(0)
    out = si.train(
        lenet(),
        separable(),
        cfg_for(augment=True, epochs_per_layer=1, **STABLE, neighbours="data", si_eval_samples=0),
        ctx(),
    )
    assert out["prefix_cache"] == lw.CACHE_NOT_EXACT and np.isfinite(out["test_loss"])


def test_growing_scope_trains_every_block_up_to_the_new_one(monkeypatch):
    torch.manual_seed(0)
    model = lenet()
    watch = Watch(model, monkeypatch)
    si.train(
        model,
        separable(),
        cfg_for(epochs_per_layer=1, classifier_epochs=1, **STABLE, train_scope="growing", si_eval_samples=16),
        ctx(),
    )
    assert watch.stage_names() == [
        ["blocks.0"],
        ["blocks.0", "blocks.1"],
        ["blocks.0", "blocks.1", "blocks.2"],
        ["blocks.0", "blocks.1", "blocks.2", "blocks.3"],
        ["head.bias", "head.weight"],
    ]


def test_bad_fork_options_are_errors():
    with pytest.raises(ValueError, match="neighbours 'everywhere'"):
        si.train(lenet(), separable(), cfg_for(neighbours="everywhere"), ctx())
    with pytest.raises(ValueError, match="train_scope 'all'"):
        fb_si.train(lenet(), separable(), cfg_for(train_scope="all"), ctx())


# ---------------------------------------------------------------- neighbours data_epoch: the search every epoch

REAL_DATA_PAIRS = si.data_pairs


def counting_search(monkeypatch, records):
    """Wraps si.data_pairs: a list of (the global epoch under way, pos, neg) of every search."""
    calls = []
    real = REAL_DATA_PAIRS

    def counting(chunks, device, max_mb=8192.0, **kw):
        pos, neg = real(chunks, device, max_mb, **kw)
        calls.append((len(records) + 1, pos.clone(), neg.clone()))
        return pos, neg

    monkeypatch.setattr(si, "data_pairs", counting)
    return calls


def test_data_epoch_neighbours_search_at_every_epoch_of_every_stage(monkeypatch):
    records = []
    calls = counting_search(monkeypatch, records)
    torch.manual_seed(0)
    model = lenet()
    out = si.train(
        model,
        separable(),
        cfg_for(epochs_per_layer=3, classifier_epochs=1, **STABLE, neighbours="data_epoch", si_eval_samples=0),
        ctx(records),
    )
    n = len(model.blocks)
    assert [epoch for epoch, _, _ in calls] == list(range(1, 3 * n + 1))  # each SI epoch, none in the classifier's
    assert all(len(pos) == 48 for _, pos, _ in calls)  # over the whole training set
    assert len(records) == 3 * n + 1 and out["pair_search_time_s"] > 0
    # the partners follow the layer as it trains: some change between the epochs of a stage
    changed = [
        not (torch.equal(calls[i][1], calls[i + 1][1]) and torch.equal(calls[i][2], calls[i + 1][2]))
        for i in range(len(calls) - 1)
        if i % 3 != 2
    ]
    assert any(changed)


def test_data_epoch_is_data_when_a_stage_has_one_epoch(monkeypatch):
    """With one epoch per stage both search once per stage, at its first batch: bit-identical runs."""

    def run(neighbours):
        records = []
        calls = counting_search(monkeypatch, records)
        torch.manual_seed(0)
        model = lenet()
        out = si.train(
            model,
            separable(),
            cfg_for(epochs_per_layer=1, **STABLE, neighbours=neighbours, si_eval_samples=16),
            ctx(records),
        )
        return model, out, records, calls

    model_d, out_d, records_d, calls_d = run("data")
    model_e, out_e, records_e, calls_e = run("data_epoch")
    assert len(calls_d) == len(calls_e) == len(model_d.blocks)
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("_s")}  # noqa: E731
    assert [strip(r) for r in records_d] == [strip(r) for r in records_e]
    assert strip(out_d) == strip(out_e)
    for (k, a), b in zip(model_d.state_dict().items(), model_e.state_dict().values()):
        assert torch.equal(a, b), k


def test_fb_si_takes_data_epoch_neighbours_but_not_the_layer_lr_schedule(monkeypatch):
    records = []
    calls = counting_search(monkeypatch, records)
    torch.manual_seed(0)
    out = fb_si.train(
        lenet(),
        separable(),
        cfg_for(epochs=1, epochs_per_layer=2, **STABLE, si_eval_samples=0, neighbours="data_epoch"),
        ctx(records),
    )
    assert [epoch for epoch, _, _ in calls] == [1, 2] and "pair_search_time_s" in out
    with pytest.raises(ValueError, match="unknown fb_si"):
        fb_si.train(lenet(), separable(), cfg_for(layer_lr_schedule="scaled"), ctx())


def test_a_wrong_neighbours_value_names_the_choices():
    with pytest.raises(ValueError, match=r"si_forward: unknown neighbours 'epoch' \(data, data_epoch, batch\)"):
        si.train(lenet(), separable(), cfg_for(neighbours="epoch"), ctx())
    with pytest.raises(ValueError, match="fb_si: unknown neighbours 'data_batch'"):
        fb_si.train(lenet(), separable(), cfg_for(neighbours="data_batch"), ctx())


# ---------------------------------------------------------------- layer_lr_schedule: the E2E steps per stage


def test_scaled_milestones_map_the_e2e_schedule_onto_a_stage():
    cfg = {"epochs": 200, "lr_milestones": [100, 150]}
    assert si.scaled_milestones(cfg, 10) == (5, 8)  # 150 * 10 / 200 = 7.5 -> 8
    assert si.scaled_milestones(cfg, 4) == (2, 3)
    assert si.scaled_milestones(cfg, 2) == (1,)  # 1.5 -> 2 is the stage's end: dropped
    assert si.scaled_milestones(cfg, 1) == ()  # 0.5 -> 0 and 0.75 -> 1: neither inside the stage
    assert si.scaled_milestones({"epochs": 200, "lr_milestones": [110, 100]}, 4) == (2,)  # 2.2 -> 2, 2: once
    assert si.scaled_milestones({"epochs": 10, "lr_milestones": []}, 10) == ()
    assert si.scaled_milestones({"epochs": 10}, 10) == ()


def schedule_cfg(schedule=None):
    """Two SI stages of 4 epochs, then the classifier (blocks 2, 3, head) for 2; E2E: 8 epochs, steps at 4 and 6."""
    opts = {} if schedule is None else {"layer_lr_schedule": schedule}
    cfg = cfg_for(
        epochs=8, epochs_per_layer=4, classifier_epochs=2, feature_blocks=2, **STABLE, si_eval_samples=0, **opts
    )
    cfg["lr_milestones"], cfg["lr_gamma"] = [4, 6], 0.5
    return cfg


def test_scaled_layer_lr_schedule_decays_every_si_stage_and_the_classifier():
    torch.manual_seed(0)
    records = []
    si.train(lenet(), separable(), schedule_cfg("scaled"), ctx(records))
    assert [(r["stage"], r["stage_epoch"]) for r in records] == [
        (s, e) for s, n in ((0, 4), (1, 4), (2, 2)) for e in range(1, n + 1)
    ]
    # SI stages: milestones 4, 6 of 8 -> stage epochs 2, 3 of 4; the classifier: 1 (and 1.5 -> 2, its end) of 2
    assert [r["lr"] for r in records] == pytest.approx([0.01, 0.01, 0.005, 0.0025] * 2 + [0.01, 0.005])


@pytest.mark.parametrize("schedule", [None, "none"])
def test_no_layer_lr_schedule_keeps_the_lr_constant(schedule):
    torch.manual_seed(0)
    records = []
    si.train(lenet(), separable(), schedule_cfg(schedule), ctx(records))
    assert len(records) == 10 and all(r["lr"] == 0.01 for r in records)


def test_a_bad_layer_lr_schedule_is_an_error():
    with pytest.raises(ValueError, match=r"si_forward: unknown layer_lr_schedule 'cosine' \(none, scaled\)"):
        si.train(lenet(), separable(), schedule_cfg("cosine"), ctx())


@pytest.mark.parametrize("device_bytes,host_bytes", [(1e9, 0), (23000, 1e9), (30000, 0), (23000, 0), (1000, 0)])
def test_the_search_plan_says_what_the_search_does(device_bytes, host_bytes):
    """si.search_plan (what bench plan reads) predicts the mode, the passes and the device peak of data_pairs."""
    _, _, chunks = _points(n=97, shape=(64,), chunk=8)
    plan = si.search_plan(97, 64, 8, device_bytes, host_bytes, **BLOCKS)
    if plan["mode"] == "too large":
        with pytest.raises(ValueError, match="cannot hold a row panel"):
            si.data_pairs(
                _counting(chunks)[0], torch.device("cpu"), device_bytes * MIB, host_mb=host_bytes * MIB, **BLOCKS
            )
        return
    stats = {}
    si.data_pairs(
        _counting(chunks)[0], torch.device("cpu"), device_bytes * MIB, host_mb=host_bytes * MIB, **BLOCKS, stats=stats
    )
    assert (plan["mode"], plan["passes"], plan["panels"]) == (stats["mode"], stats["passes"], stats["panels"])
    assert plan["device_bytes"] == pytest.approx(stats["peak_device_mb"] * 2**20, rel=0.1)
    # Karimi's DBpedia SI on the papers' node (24 GB GPU: 8 GiB to the search; 64 GB host: half of it): streamed
    dbpedia = si.search_plan(560_000, 65_536, 512, 8192 * 2**20, 32e9)
    assert dbpedia["mode"] == "streamed" and dbpedia["device_bytes"] <= 8192 * 2**20 and dbpedia["passes"] > 2
