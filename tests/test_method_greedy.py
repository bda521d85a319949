"""Greedy layer-wise training with temporary linear heads (greedy_layerwise) and Belilovsky et al.'s SimCNN with
auxiliary problems (belilovsky_greedy): what each stage may change, the optimizers, the final head, learning."""

import pytest
import torch
from helpers import Watch, separable
from helpers import cpu_context as ctx

from bench.methods import belilovsky, greedy
from bench.models import build_model, simcnn


def cfg_for(lr=0.01, optimizer="sgd", batch_size=16, epochs=1, augment=False, **method_options):
    return {
        "epochs": epochs,
        "lr": lr,
        "optimizer": optimizer,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": batch_size,
        "lr_milestones": [],
        "lr_gamma": 0.2,
        "eval_batch_size": 32,
        "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3},
        "augment": {"crop_padding": 2 if augment else 0, "hflip": augment},
        "experiment": "test-greedy",
        "method_options": method_options,
    }


def lenet(size=16, classes=4):
    return build_model({"base": "lenet"}, 3, classes, size, {"bn": True, "width_mult": 0.5})


SIMCNN_OPTS = {"nonlinearity": "relu", "dropout": 0.0, "width_aux": 128, "width_mult": 1 / 16}


def simcnn_model(base="simcnn_k2", size=16, classes=4):
    return build_model({"base": base}, 3, classes, size, SIMCNN_OPTS)


def simcnn_cfg(base="simcnn_k2", lr=0.1, **kw):
    cfg = cfg_for(lr=lr, **kw)
    cfg["architecture"] = {"base": base}
    cfg["model"] = dict(SIMCNN_OPTS)
    return cfg


# ---------------------------------------------------------------- greedy layer-wise


def test_greedy_stages_train_one_block_with_a_temporary_head(monkeypatch):
    torch.manual_seed(0)
    model = lenet()
    watch = Watch(model, monkeypatch)
    records = []
    out = greedy.train(
        model, separable(), cfg_for(epochs_per_layer=1, classifier_epochs=1, si_eval_samples=16), ctx(records)
    )
    assert watch.stage_names() == [["blocks.0"], ["blocks.1"], ["blocks.2"], ["blocks.3"], ["head.bias", "head.weight"]]
    assert [o["extra"] for o in watch.optimizers] == [2, 2, 2, 2, 0]  # Linear weight + bias of the temporary head
    assert all(o["fresh"] for o in watch.optimizers)
    # the temporary head is flatten -> Linear(block output features -> K)
    assert [tuple(o["params"][-2].shape) for o in watch.optimizers[:4]] == [
        (4, 3 * 8 * 8),
        (4, 8 * 2 * 2),
        (4, 60),
        (4, 42),
    ]
    assert watch.steps == 5 * 3
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert all("stage_test_accuracy" in r and "si" in r for r in records[:4])
    assert {
        "test_accuracy",
        "test_error",
        "test_loss",
        "train_time_s",
        "layer3_test_accuracy",
        "si_final",
        "prefix_time_s",
        "prefix_cache_saved_s",
        "prefix_cache",
    } <= set(out)
    assert all(p.requires_grad for p in model.parameters())


def test_greedy_cache_prefix_is_exact():
    def run(cache):
        torch.manual_seed(0)
        model = lenet()
        out = greedy.train(
            model,
            separable(),
            cfg_for(epochs_per_layer=2, classifier_epochs=2, si_eval_samples=0, cache_prefix=cache),
            ctx(seed=5),
        )
        return model, out

    cached, out_cached = run(True)
    plain, out_plain = run(False)
    assert out_cached["prefix_cached_stages"] == 4 and out_plain["prefix_cached_stages"] == 0
    for (k, a), b in zip(cached.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), k


def test_greedy_learns_a_separable_set():
    torch.manual_seed(0)
    out = greedy.train(
        lenet(),
        separable(n_train=64, n_test=64),
        cfg_for(epochs_per_layer=3, classifier_epochs=4, si_eval_samples=0),
        ctx(),
    )
    assert out["test_accuracy"] > 60  # chance: 25


def test_greedy_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown greedy_layerwise"):
        greedy.train(lenet(), separable(), cfg_for(loss_reduction="sum"), ctx())


# ---------------------------------------------------------------- Belilovsky et al.


def capture_aux_heads(monkeypatch):
    made = []
    original = simcnn.aux_heads

    def aux_heads(*a, **kw):
        made.extend(original(*a, **kw))
        return made

    monkeypatch.setattr(simcnn, "aux_heads", aux_heads)
    return made


def test_belilovsky_stages_optimizers_and_final_head(monkeypatch):
    torch.manual_seed(0)
    model = simcnn_model()
    heads = capture_aux_heads(monkeypatch)
    watch = Watch(model, monkeypatch)
    cfg = simcnn_cfg(epochs_per_layer=2)
    cfg["lr_milestones"] = [1]
    records = []
    out = belilovsky.train(model, separable(), cfg, ctx(records))
    blocks = len(model.blocks)
    # two optimizers per block (the second after the decay), each over block j + aux head j only
    assert watch.stage_names() == [[f"blocks.{j}"] for j in range(blocks) for _ in range(2)]
    for j in range(blocks):
        first, second = watch.optimizers[2 * j], watch.optimizers[2 * j + 1]
        aux = {id(p) for p in heads[j].parameters()}
        assert {id(p) for p in first["params"]} - {id(p) for p in model.parameters()} == aux
        assert [id(p) for p in first["params"]] == [id(p) for p in second["params"]]
        assert first["opt"] is not second["opt"] and second["fresh"]  # momentum reset at the decay
        assert (first["lr"], second["lr"]) == pytest.approx((0.1, 0.02))
    assert [r["lr"] for r in records] == pytest.approx([0.1, 0.02] * blocks)
    assert out["optimizers_created"] == 2 * blocks
    # the network's prediction is the last aux head: copied into model.head
    last = heads[-1].state_dict()
    assert list(model.head.state_dict()) == list(last)
    assert all(torch.equal(v, last[k]) for k, v in model.head.state_dict().items())
    x = torch.randn(5, 3, 16, 16)
    model.eval()
    heads[-1].eval()
    with torch.no_grad():
        feats = x
        for block in model.blocks:
            feats = block(feats)
        assert torch.equal(model(x), heads[-1](feats))
    assert out["test_accuracy"] == pytest.approx(records[-1]["test_accuracy"])
    assert 0 <= out["ensemble_test_accuracy"] <= 100 and "ensemble_test_accuracy" in records[0]


def test_belilovsky_decay_in_place_when_asked(monkeypatch):
    torch.manual_seed(0)
    model = simcnn_model("simcnn_k1")
    watch = Watch(model, monkeypatch)
    cfg = simcnn_cfg("simcnn_k1", epochs_per_layer=2, reset_optimizer_at_decay=False, ensemble=False)
    cfg["lr_milestones"] = [1]
    records = []
    out = belilovsky.train(model, separable(n_train=32, n_test=16), cfg, ctx(records))
    assert len(watch.optimizers) == len(model.blocks) and out["optimizers_created"] == len(model.blocks)
    assert [r["lr"] for r in records] == pytest.approx([0.1, 0.02] * len(model.blocks))
    assert "ensemble_test_accuracy" not in out


def test_belilovsky_learns_a_separable_set():
    torch.manual_seed(0)
    out = belilovsky.train(
        simcnn_model(), separable(n_train=64, n_test=64), simcnn_cfg(epochs_per_layer=5, lr=0.05), ctx()
    )
    assert out["test_accuracy"] > 60


def test_belilovsky_needs_simcnn():
    cfg = cfg_for()
    cfg["architecture"] = {"base": "lenet"}
    with pytest.raises(ValueError, match="SimCNN"):
        belilovsky.train(lenet(), separable(), cfg, ctx())
