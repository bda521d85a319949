"""Model builders (VGG and ResNet from hierarchies) and the data path (stand-ins, real files, batches)."""

import pytest
import torch
from conftest import shared_raw

from bench import BenchError
from bench.claims.datasets import DATASETS
from bench.data import load, missing_reason
from bench.data.loader import Batches, random_crop_flip
from bench.data.synthetic import stand_in
from bench.data.tensors import TensorData
from bench.models import build_model
from bench.models import missing_reason as model_missing


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_known_parameter_counts():
    # the CIFAR ResNet-18 (3x3 stem, no max-pool, 10 classes) has 11,173,962 parameters
    assert n_params(build_model({"base": "resnet18"}, 3, 10, 32, {})) == 11_173_962
    # N&E's vgg8b with its 1024-unit hidden FC block: 8.9M parameters (docs/methods/predsim.md#14-architectures)
    vgg8b = build_model({"base": "vgg8b"}, 3, 10, 32, {"head_pool": "flatten", "head_hidden": [1024], "head_bn": True})
    assert round(n_params(vgg8b) / 1e6, 1) == 8.9


@pytest.mark.parametrize(
    "arch,blocks",
    [
        ({"base": "vgg16", "hierarchy": [3, 3, 4, 4, 4]}, 18),
        ({"base": "vgg8b", "hierarchy": [5, 5, 4, 4]}, 18),
        ({"base": "resnet50", "hierarchy": [1, 2, 8, 5]}, 17),
        ({"base": "resnet152"}, 51),
    ],
)
def test_hierarchies_set_the_blocks(arch, blocks):
    model = build_model(arch, 3, 100, 32, {"width_mult": 0.0625})
    assert len(model.blocks) == blocks
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_inputs_of_every_shape():
    mnist_vgg = build_model({"base": "vgg19"}, 1, 10, 32, {"width_mult": 0.125, "head_hidden": [512, 512]})
    assert mnist_vgg(torch.randn(2, 1, 32, 32)).shape == (2, 10) and mnist_vgg.input_shape == (1, 32, 32)
    imagenette = build_model({"base": "resnet18"}, 3, 10, 160, {"stem": "imagenet", "width_mult": 0.125})
    assert imagenette(torch.randn(2, 3, 160, 160)).shape == (2, 10)
    with pytest.raises(ValueError, match="too small"):
        build_model({"base": "vgg11"}, 1, 10, 28 // 2, {})
    with pytest.raises(ValueError, match="hierarchy"):
        build_model({"base": "vgg16", "hierarchy": [1, 1, 1, 1]}, 3, 10, 32, {})


def test_width_multiplier_and_unbuilt_models():
    full = n_params(build_model({"base": "resnet50"}, 3, 10, 32, {}))
    assert n_params(build_model({"base": "resnet50"}, 3, 10, 32, {"width_mult": 0.25})) < full / 10
    assert (
        "not in the model zoo" in model_missing({"base": "mobilenet_v2"}) and model_missing({"base": "resnet101"}) == ""
    )
    assert "not in the model zoo" in model_missing({"base": "vgg12"})


@pytest.mark.parametrize("name", [n for n, d in DATASETS.items() if d.loader])
def test_stand_ins_have_the_real_shapes(name):
    info = DATASETS[name]
    data = stand_in(info, 64, 32)
    assert data.x_train.shape == (64, *info.shape) and data.x_train.dtype == torch.uint8
    assert data.y_train.dtype == torch.int64 and int(data.y_train.max()) < info.num_classes
    assert data.num_classes == info.num_classes and data.x_test.shape == (32, *info.shape)
    again = stand_in(info, 64, 32)
    assert torch.equal(data.x_train, again.x_train)  # the same stand-in every time


@pytest.mark.parametrize("name", ["mnist", "cifar10", "imagenette"])
def test_stand_ins_are_learnable(name):
    """A nearest-class-mean classifier fitted on the train split beats chance by far on the test split."""
    data = stand_in(DATASETS[name], 1000, 500)
    x, xt = data.x_train.flatten(1).float(), data.x_test.flatten(1).float()
    means = torch.stack([x[data.y_train == c].mean(0) for c in range(data.num_classes)])
    accuracy = (torch.cdist(xt, means).argmin(1) == data.y_test).float().mean().item()
    assert accuracy > 0.9


def test_padding_mnist_to_32():
    data = stand_in(DATASETS["mnist"], 8, 4).resized(32)
    assert data.x_train.shape[-2:] == (32, 32) and int(data.x_train[:, :, :2].max()) == 0


def test_crop_and_flip_match_a_per_sample_reference():
    x = torch.randint(0, 255, (6, 3, 8, 8), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, 2, False, gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    ref_gen = torch.Generator().manual_seed(0)
    dy = torch.randint(0, 5, (6,), generator=ref_gen)
    dx = torch.randint(0, 5, (6,), generator=ref_gen)
    for i in range(6):
        assert torch.equal(out[i], padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8])
    flipped = random_crop_flip(x, 0, True, torch.Generator().manual_seed(1))
    for i in range(6):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))


def test_batches_normalize_and_are_seeded():
    data = stand_in(DATASETS["cifar10"], 100, 10)
    kw = dict(device="cpu", mean=[0.5] * 3, std=[0.25] * 3, augment={"crop_padding": 4, "hflip": True}, shuffle=True)
    a = list(Batches(data.x_train, data.y_train, 32, seed=3, **kw))
    b = list(Batches(data.x_train, data.y_train, 32, seed=3, **kw))
    assert [len(y) for _, y in a] == [32, 32, 32, 4]
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    plain = next(iter(Batches(data.x_train, data.y_train, 100, device="cpu", mean=[0.5] * 3, std=[0.25] * 3)))[0]
    assert torch.allclose(plain, (data.x_train.float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_real_mnist_from_the_shared_data(tmp_path):
    shared_raw("mnist", tmp_path / "MNIST" / "raw")
    cfg = {"data": {"source": "real"}, "input_size": 32}
    data = load("mnist", cfg, root=tmp_path)
    assert data.x_train.shape == (60000, 1, 32, 32) and data.x_test.shape == (10000, 1, 32, 32)
    assert data.x_train.dtype == torch.uint8 and sorted(data.y_train.unique().tolist()) == list(range(10))
    assert data.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first test labels


def test_missing_real_data_is_a_clear_error(tmp_path):
    with pytest.raises(BenchError, match=r"dataset cifar10 not found under .*bench data download cifar10"):
        load("cifar10", {"data": {"source": "real"}, "input_size": 32}, root=tmp_path / "empty")
    assert missing_reason("cifar100", "real") == ""
    assert isinstance(stand_in(DATASETS["cifar100"], 4, 4), TensorData)
