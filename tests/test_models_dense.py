"""DenseNet and ResNeXt builders: forward/backward, blocks, parameter counts against torchvision and by hand."""

import pytest
import torch
import torchvision

from bench.models import build_model, missing_reason


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "base,opts,blocks",
    [
        ("densenet", {"width_mult": 0.5}, ["stem", "dense1", "trans1", "dense2", "trans2", "dense3"]),
        ("densenet_bc100", {"width_mult": 0.5}, ["stem", "dense1", "trans1", "dense2", "trans2", "dense3"]),
        ("densenet", {"bn": False, "width_mult": 0.25, "dropout": 0.2}, None),  # no in-place activation on kept maps
        ("resnext", {}, [f"conv{i}" for i in range(1, 9)]),
        ("resnext50_32x4d", {"width_mult": 0.25}, None),  # cifar stem (the default)
    ],
)
def test_forward_backward_and_blocks(base, opts, blocks):
    torch.manual_seed(0)
    model = build_model({"base": base}, 3, 100, 32, opts)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 100) and model.input_shape == (3, 32, 32) and model.num_classes == 100
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    if blocks is not None:
        assert model.block_names == blocks
        assert model.part(blocks[-1]) is model.blocks[-1]
    elif base == "resnext50_32x4d":
        assert len(model.blocks) == 1 + 3 + 4 + 6 + 3  # stem + one block per bottleneck unit
    # the blocks then the head reproduce the forward pass
    model.eval()
    h = x
    for block in model.blocks:
        h = block(h)
    assert torch.allclose(model.head(h), model(x))
    assert missing_reason({"base": base}) == ""


@pytest.mark.parametrize(
    "ours,theirs,opts",
    [
        ("densenet121", torchvision.models.densenet121, {}),
        ("resnext50_32x4d", torchvision.models.resnext50_32x4d, {"stem": "imagenet"}),
    ],
)
def test_same_as_torchvision(ours, theirs, opts):
    model, reference = build_model({"base": ours}, 3, 1000, 224, opts), theirs(weights=None)
    assert n_params(model) == n_params(reference) == {"densenet121": 7_978_856, "resnext50_32x4d": 25_028_904}[ours]
    # same tensors in the same order: torchvision's weights give torchvision's outputs
    mine, tv = model.state_dict(), reference.state_dict()
    assert [v.shape for v in mine.values()] == [v.shape for v in tv.values()]
    model.load_state_dict(dict(zip(mine, tv.values())))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), reference.eval()(x), atol=1e-5)


def test_parameter_counts_by_hand():
    # Bhyravabhottla & Lee's "resnext", 3x32x32 input, 100 classes: each conv 3x3 with bias, (9*cin + 1)*cout,
    # plus its BN (2*cout); global average pool then FC (512 + 1)*100.
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    #   1,792+128  36,928+128  73,856+256  147,584+256  295,168+512  590,080+512  1,180,160+1,024  2,359,808+1,024
    expected = sum((9 * cin + 1) * cout + 2 * cout for cin, cout in convs) + (512 + 1) * 100
    assert expected == 4_689_216 + 51_300 == 4_740_516
    assert n_params(build_model({"base": "resnext"}, 3, 100, 32, {})) == expected
    # CIFAR DenseNet-BC-100 (k=12) on CIFAR-10: the usual 769,162 (0.8M in Huang et al., Table 2); the paper's
    # "densenet" adds a BN (2 x 24) after its stem conv
    assert n_params(build_model({"base": "densenet_bc100"}, 3, 10, 32, {})) == 769_162
    assert n_params(build_model({"base": "densenet"}, 3, 10, 32, {})) == 769_162 + 48
    assert n_params(build_model({"base": "densenet"}, 3, 10, 32, {"stem": "cifar"})) == 769_162


def test_options_shrink_and_change_the_networks():
    for base in ("densenet", "densenet_bc100", "resnext", "resnext50_32x4d"):
        full = n_params(build_model({"base": base}, 3, 100, 32, {}))
        assert n_params(build_model({"base": base}, 3, 100, 32, {"width_mult": 0.0625, "unknown": 1})) < full / 4
    # growth rate and blocks from opts or a hierarchy
    small = build_model({"base": "densenet"}, 3, 10, 32, {"growth_rate": 6, "block_config": [2, 2]})
    assert small.block_names == ["stem", "dense1", "trans1", "dense2"] and len(small.blocks[1]) == 2
    assert len(build_model({"base": "densenet", "hierarchy": [1, 2, 3, 4]}, 3, 10, 32, {}).blocks) == 8
    # the real ResNeXt instead of the paper's description
    real = build_model({"base": "resnext"}, 3, 100, 32, {"resnext_variant": "resnext50_32x4d"})
    assert n_params(real) == n_params(build_model({"base": "resnext50_32x4d"}, 3, 100, 32, {}))
    assert len(build_model({"base": "resnext", "hierarchy": [1, 1, 3, 3]}, 3, 10, 32, {}).blocks) == 8
    with pytest.raises(ValueError, match="resnext_variant"):
        build_model({"base": "resnext"}, 3, 10, 32, {"resnext_variant": "resnext101"})
    with pytest.raises(ValueError, match="too small"):
        build_model({"base": "resnext"}, 3, 10, 8, {})
    # ResNets stay as they were: groups 1, width per group 64
    assert n_params(build_model({"base": "resnet50"}, 3, 1000, 224, {"stem": "imagenet"})) == 25_557_032


@pytest.mark.parametrize("base", ["densenet", "resnext", "vgg16", "cnn12"])
def test_keras_defaults_for_every_model_of_a_keras_paper(base):
    """Keras' defaults by hand: Glorot-uniform kernels (bound sqrt(6 / (fan_in + fan_out)), variance
    2 / (fan_in + fan_out)), zero biases, BatchNormalization momentum 0.99 (PyTorch: 0.01) and epsilon 1e-3."""
    import math

    from bench import experiments as ex

    opts = {
        **ex.config(ex.Experiment("bhyravabhottla", "cifar100", base, "backprop"), "paper")["model"],
        "width_mult": 0.25,
    }
    assert opts["keras_defaults"] is True
    torch.manual_seed(0)
    model = build_model({"base": base}, 3, 100, 32, opts)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert all(m.momentum == 0.01 and m.eps == 1e-3 for m in bns)
    assert bns or base in ("vgg16", "cnn12")  # the Keras VGG16 and the 12-layer CNN have no BN
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for m in layers:
        receptive = m.weight[0, 0].numel() if m.weight.dim() > 2 else 1
        fan_in, fan_out = m.weight.shape[1] * receptive, m.weight.shape[0] * receptive
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert m.weight.abs().max() <= bound + 1e-7
        if m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0
    big = max(layers, key=lambda m: m.weight.numel())
    # the largest layer's sample variance is the uniform's, 2 / (fan_in + fan_out), within 5 %
    receptive = big.weight[0, 0].numel() if big.weight.dim() > 2 else 1
    expected = 2.0 / ((big.weight.shape[1] + big.weight.shape[0]) * receptive)
    assert big.weight.var().item() == pytest.approx(expected, rel=0.05)
    plain = build_model({"base": base}, 3, 100, 32, {**opts, "keras_defaults": False})
    if base != "cnn12":  # without the switch: PyTorch's defaults (cnn12 keeps its own Keras init)
        assert all(
            m.momentum == 0.1 and m.eps == 1e-5
            for m in plain.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        )
