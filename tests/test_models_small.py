"""AlexNet, LeNet-5 and the 12-layer CNN: shapes the papers use, exposed blocks, parameter counts against
independent references (torchvision, hand counts, the paper's per-layer table), width scaling, size checks."""

import pytest
import torch
import torchvision

from bench.models import build_model


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def build(base, in_channels=3, num_classes=10, input_size=32, **opts):
    return build_model({"base": base}, in_channels, num_classes, input_size, opts)


@pytest.mark.parametrize(
    "base,shape,names",
    [
        ("alexnet", (3, 32, 32), ["conv1", "conv2", "conv3", "conv4", "conv5"]),
        ("alexnet", (1, 32, 32), ["conv1", "conv2", "conv3", "conv4", "conv5"]),
        ("lenet", (3, 32, 32), ["conv1", "conv2", "fc1", "fc2"]),
        ("lenet", (1, 32, 32), ["conv1", "conv2", "fc1", "fc2"]),
        ("lenet", (1, 28, 28), ["conv1", "conv2", "fc1", "fc2"]),
        (
            "cnn12",
            (3, 32, 32),
            [
                "conv1",
                "conv2",
                "pool1",
                "dropout1",
                "conv3",
                "conv4",
                "pool2",
                "dropout2",
                "flatten",
                "fc1",
                "dropout3",
            ],
        ),
    ],
)
@pytest.mark.parametrize("bn", [False, True])
def test_forward_backward(base, shape, names, bn):
    torch.manual_seed(0)
    model = build(base, shape[0], 7, shape[1], bn=bn, width_mult=0.25)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert len(model.blocks) == len(names) and model.block_names == names
    assert model.input_shape == shape and model.num_classes == 7


def test_full_width_forward():
    for base, shape in [("alexnet", (3, 32, 32)), ("lenet", (1, 28, 28)), ("cnn12", (3, 32, 32))]:
        assert build(base, shape[0], 100, shape[1])(torch.randn(2, *shape)).shape == (2, 100)


def test_alexnet_imagenet_preset_matches_torchvision():
    with torch.device("meta"):  # counts only: no memory, no initialisation
        reference = n_params(torchvision.models.alexnet(weights=None, num_classes=1000))
        ours = build("alexnet", 3, 1000, 224, alexnet_preset="imagenet")
    assert ours.head[0].output_size == 6
    assert n_params(ours) == reference == 61_100_840


def test_alexnet_small_preset_counts():
    model = build("alexnet")
    assert [n_params(b) for b in model.blocks] == [4864, 307392, 663936, 884992, 590080]
    assert n_params(model.head) == 2 * (4096 * 4096 + 4096) + 4096 * 10 + 10  # flattened 256x4x4 = 4096
    fc1 = next(m for m in build("alexnet", 1, 10, 28, width_mult=0.25).head if isinstance(m, torch.nn.Linear))
    assert fc1.in_features == 64 * 3 * 3  # 28 -> 14 -> 7 -> 3


def test_lenet_hand_count():
    model = build("lenet")
    assert [n_params(b) for b in model.blocks] + [n_params(model.head)] == [456, 2416, 48120, 10164, 850]
    assert n_params(model) == 62006
    # 28-px inputs are padded in conv1, so they need the same weights as 32-px ones (minus the input channels)
    assert n_params(build("lenet", 1, 10, 28)) == n_params(build("lenet", 1, 10, 32))


def test_cnn12_paper_counts():
    model = build("cnn12")
    expected = {
        "conv1": 896,
        "conv2": 9248,
        "pool1": 0,
        "dropout1": 0,
        "conv3": 18496,
        "conv4": 36928,
        "pool2": 0,
        "dropout2": 0,
        "flatten": 0,
        "fc1": 2097664,
        "dropout3": 0,
        "head": 5130,
    }
    assert {name: n_params(model.part(name)) for name in expected} == expected
    assert n_params(model) == 2_168_362
    assert n_params(build("cnn12", 3, 100)) == 2_214_532
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.25, 0.25, 0.5]
    assert rates == [m.p for m in build("cnn12", dropout=0.9).modules() if isinstance(m, torch.nn.Dropout)]
    assert all(not m.bias.detach().any() for m in model.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("base", ["alexnet", "lenet", "cnn12"])
def test_width_mult_shrinks(base):
    full, small = build(base), build(base, width_mult=0.0625)
    assert n_params(small) < n_params(full) / 10
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_options():
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in build("alexnet", bn=True).modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in build("lenet").modules())
    leaky = build("lenet", nonlinearity="leakyrelu", negative_slope=0.2, some_unknown_option=1)
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in leaky.modules())


@pytest.mark.parametrize(
    "base,size,opts",
    [("alexnet", 7, {}), ("alexnet", 32, {"alexnet_preset": "imagenet"}), ("lenet", 11, {}), ("cnn12", 3, {})],
)
def test_too_small_inputs(base, size, opts):
    with pytest.raises(ValueError):
        build(base, 3, 10, size, **opts)
