"""random_draws per_epoch (bench.data.loader.Batches): every draw of an epoch made before its first batch and moved in
one copy must give the very batches random_draws per_batch gives, from the same generator stream."""

import pytest
import torch

from bench.data.loader import Batches, one_copy

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
CROP_FLIP = {"crop_padding": 2, "hflip": True}


def images(n=37, classes=4):
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen)
    return x, torch.arange(n) % classes


def batches(random_draws, x, y, seed=5, augment=CROP_FLIP, shuffle=True, classes_per_batch=0, takes=0, device="cpu"):
    kw = {"mean": MEAN, "std": STD, "augment": augment, "shuffle": shuffle, "seed": seed}
    b = Batches(x, y, 8, device=device, random_draws=random_draws, **kw)
    b.classes_per_batch, b.takes_per_batch = classes_per_batch, takes
    return b


def epochs(b, count=2, takes=0):
    """Everything two epochs give: each batch's indices, inputs and labels, each take's inputs, the generator state."""
    out = []
    for _ in range(count):
        for idx, xb, yb in b.indexed():
            out += [idx.clone(), xb, yb]
            for t in range(takes):  # partners of the batch's size, as the SI loss takes them
                out.append(b.take(idx.flip(0) if t else idx)[0])
        out.append(b.gen.get_state())
    return out


def same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.dtype == v.dtype and torch.equal(u, v)


@pytest.mark.parametrize(
    "augment, shuffle, classes_per_batch",
    [
        (CROP_FLIP, True, 0),
        ({"crop_padding": 3}, True, 0),
        ({"hflip": True}, False, 0),
        ({}, True, 0),
        (CROP_FLIP, True, 2),
    ],
)
def test_per_epoch_draws_give_the_per_batch_batches(augment, shuffle, classes_per_batch):
    x, y = images()
    runs = [epochs(batches(mode, x, y, 5, augment, shuffle, classes_per_batch)) for mode in ("per_batch", "per_epoch")]
    same(*runs)
    # the augmentation is on: a different seed gives other batches, and the same seed the same ones
    other = epochs(batches("per_epoch", x, y, 6, augment, shuffle, classes_per_batch))
    if augment or shuffle:
        assert not all(torch.equal(u, v) for u, v in zip(runs[1], other))
    same(runs[1], epochs(batches("per_epoch", x, y, 5, augment, shuffle, classes_per_batch)))


def test_partner_takes_drawn_ahead_give_the_per_batch_takes():
    x, y = images()
    same(*(epochs(batches(mode, x, y, takes=2), takes=2) for mode in ("per_batch", "per_epoch")))


def test_text_batches_are_the_same():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 50, (21, 6), generator=gen), torch.arange(21) % 3
    same(*(epochs(Batches(x, y, 4, device="cpu", shuffle=True, random_draws=m)) for m in ("per_batch", "per_epoch")))


def test_reserved_takes_must_be_used_as_declared():
    x, y = images()
    unused = batches("per_epoch", x, y, takes=1)
    with pytest.raises(RuntimeError, match="were not used"):
        list(unused.indexed())
    wrong = batches("per_epoch", x, y, takes=1)
    idx, _, _ = next(wrong.indexed())
    with pytest.raises(RuntimeError, match="take\\(\\) of 3 samples"):
        wrong.take(idx[:3])


def test_one_copy_and_the_setting():
    a, b = torch.arange(3), torch.tensor([True, False])
    (a_cpu, a_dev), none, (b_cpu, b_dev) = one_copy([a, None, b], "cpu")
    assert none is None and a_cpu.tolist() == a_dev.tolist() == [0, 1, 2] and b_dev.tolist() == [1, 0]
    x, y = images()
    orders = [batches(m, x, y).epoch_order_moved() for m in ("per_batch", "per_epoch")]
    same(orders[0], orders[1])
    with pytest.raises(ValueError, match="random_draws must be one of per_batch, per_epoch"):
        batches("per_sample", x, y)


def test_an_si_run_with_augmented_partners_trains_the_same_model():
    """SI with data neighbours takes two augmented partner batches per batch (takes 2), then trains its classifier
    on plain batches (takes 0): both random_draws modes train the same model to the same metrics."""
    from helpers import cpu_context, separable

    from bench.methods import si
    from bench.models import build_model

    runs = []
    for mode in ("per_batch", "per_epoch"):
        torch.manual_seed(0)
        model = build_model({"base": "lenet"}, 3, 4, 16, {"bn": True, "width_mult": 0.5})
        cfg = {
            **dict(epochs=1, lr=0.01, optimizer="sgd", momentum=0.9, weight_decay=0.0, batch_size=16, lr_milestones=[]),
            "eval_batch_size": 32,
            "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3},
            "augment": CROP_FLIP,
            "random_draws": mode,
            "method_options": {
                "epochs_per_layer": 1,
                "classifier_epochs": 1,
                "neighbours": "data",
                "feature_blocks": 2,
            },
        }
        cfg["method_options"].update(loss_reduction="mean", normalize_features=True, si_eval_samples=0)
        out = si.train(model, separable(n_train=32, n_test=16), cfg, cpu_context())
        runs.append(([out["test_loss"], out["test_accuracy"]], list(model.state_dict().values())))
    assert runs[0][0] == runs[1][0]
    same(runs[0][1], runs[1][1])


def test_stored_maps_are_read_in_the_same_order():
    """Learn & Drop's stored maps (StoredBatches) follow the run's shuffle in both modes, written and read by the
    CPU indices each batch gives."""
    from bench.methods.learn_drop.store import FeatureStore, StoredBatches

    x, y = images()
    runs = []
    for mode in ("per_batch", "per_epoch"):
        b = batches(mode, x, y)
        store = FeatureStore(len(y), [(2,)], "float32", "cpu", max_mb=1)
        for idx, xb, _ in b.indexed():  # an extraction epoch: the maps written by the batch's indices
            store.write(idx, [xb.flatten(1)[:, :2]])
        runs.append([t for _ in range(2) for idx, (f,), yb in StoredBatches(store, b) for t in (idx, f, yb)])
    same(*runs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the host syncs are CUDA's")
def test_per_epoch_draws_make_no_host_sync_per_batch_on_cuda():
    """CUDA's sync debug mode raises at a copy that makes the host wait: per_batch makes one per batch (its offsets
    from pageable memory), per_epoch none in a whole epoch, partners included; the batches are the same."""
    x, y = images()
    per_batch, per_epoch = (batches(m, x, y, takes=1, device="cuda") for m in ("per_batch", "per_epoch"))
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):
            next(per_batch.indexed())
        found = epochs(per_epoch, count=1, takes=1)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    per_batch.gen.manual_seed(5)
    same([t.cpu() for t in epochs(per_batch, count=1, takes=1)], [t.cpu() for t in found])
