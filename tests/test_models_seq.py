"""SimCNN (Belilovsky et al.'s greedy CIFAR nets, psi downsampling, k-specific heads) and VD-CNN (char-level text)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.data.text import VOCAB_SIZE
from bench.models import build_model
from bench.models.simcnn import SpaceToDepth, aux_heads
from bench.models.vdcnn import kmax_pool


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def n_convs(module, kind):
    return sum(isinstance(m, kind) for m in module.modules())


# ---------------------------------------------------------------- SimCNN


def test_psi_is_an_invertible_space_to_depth():
    x = torch.randn(2, 3, 8, 6)
    y = SpaceToDepth(2)(x)
    assert y.shape == (2, 12, 4, 3)
    assert torch.equal(F.pixel_shuffle(y, 2), x)
    assert torch.equal(torch.sort(y.flatten())[0], torch.sort(x.flatten())[0])  # a permutation of the entries


@pytest.mark.parametrize(
    "base,blocks,widths",
    [
        ("simcnn_k1", 5, [256, 256, 512, 1024, 1024]),
        ("simcnn_k2", 4, [128, 128, 256, 256]),
        ("simcnn_k3", 4, [128, 128, 256, 256]),
    ],
)
def test_simcnn_builds_runs_and_exposes_its_blocks(base, blocks, widths):
    torch.manual_seed(0)
    model = build_model({"base": base}, 3, 10, 32, {})
    assert len(model.blocks) == blocks and len(model.block_names) == blocks
    convs = [next(m for m in b.modules() if isinstance(m, nn.Conv2d)) for b in model.blocks]
    assert [c.out_channels for c in convs] == widths
    assert [c.bias is not None for c in convs] == [base == "simcnn_k1"] + [False] * (blocks - 1)
    # the k=1 recipe has no BN, not even in its head (layerCNN: the aux head follows --bn)
    assert (n_convs(model, nn.BatchNorm2d) > 0) == (base != "simcnn_k1")
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_simcnn_k2_and_k3_share_the_trunk_but_not_the_head():
    k2 = build_model({"base": "simcnn_k2"}, 3, 10, 32, {})
    k3 = build_model({"base": "simcnn_k3"}, 3, 10, 32, {})
    shapes = lambda m: [tuple(p.shape) for p in m.blocks.parameters()]  # noqa: E731
    assert shapes(k2) == shapes(k3)
    assert n_convs(k2.head, nn.Conv2d) == 1 and n_convs(k3.head, nn.Conv2d) == 2
    # hand count of the k=2 trunk: bias-free 3x3 convs, BN = 2 parameters per channel
    trunk = (
        3 * 128 * 9
        + 2 * 128  # conv1: 3 -> 128 @32
        + 128 * 128 * 9
        + 2 * 128  # conv2: 128 -> 128 @32
        + 4 * 128 * 256 * 9
        + 2 * 256  # conv3: psi (512 channels) -> 256 @16
        + 256 * 256 * 9
        + 2 * 256
    )  # conv4: 256 -> 256 @16
    assert trunk == 1_921_920 and n_params(k2.blocks) == trunk
    # k=2 head: aux conv 256 -> 256 (width_aux 128 doubled once), BN, 2x2 avg pool, BN, Linear(256*4 -> 10)
    assert n_params(k2.head) == 256 * 256 * 9 + 2 * 256 + 2 * 256 + (1024 * 10 + 10)


def test_simcnn_aux_heads_fit_every_block():
    opts = {"width_mult": 1 / 16}
    model = build_model({"base": "simcnn_k3"}, 3, 10, 32, opts)
    heads = aux_heads("simcnn_k3", 10, 32, opts)
    assert len(heads) == len(model.blocks)
    x = torch.randn(2, 3, 32, 32)
    for block, head in zip(model.blocks, heads):
        x = block(x)
        assert head(x).shape == (2, 10)
    assert (
        n_params(build_model({"base": "simcnn_k1"}, 3, 10, 32, opts))
        < n_params(build_model({"base": "simcnn_k1"}, 3, 10, 32, {})) / 100
    )


# ---------------------------------------------------------------- VD-CNN


def test_kmax_pooling_keeps_the_temporal_order():
    x = torch.tensor([[[1.0, 9.0, 3.0, 7.0, 5.0, 8.0]]])
    assert kmax_pool(x, 3).tolist() == [[[9.0, 7.0, 8.0]]]
    assert kmax_pool(x, 6).tolist() == x.tolist()


@pytest.mark.parametrize("depth", [9, 17, 29, 49])
def test_vdcnn_has_one_block_per_conv(depth):
    model = build_model({"base": f"vdcnn{depth}"}, 1, 4, 1024, {"width_mult": 1 / 16})
    assert n_convs(model, nn.Conv1d) == depth == len(model.blocks)
    assert model.block_names[:3] == ["embed_conv", "s1c1", "s1c2"] and model.input_dtype == torch.long
    assert model.input_shape == (1024,)


@pytest.mark.parametrize("depth,mult", [(9, 1.0), (17, 0.25), (29, 0.25)])
def test_vdcnn_forward_backward(depth, mult):
    torch.manual_seed(0)
    model = build_model({"base": f"vdcnn{depth}"}, 1, 4, 1024, {"width_mult": mult})
    x = torch.randint(0, VOCAB_SIZE, (2, 1024))
    out = model(x)
    assert out.shape == (2, 4)
    out.sum().backward()
    assert model.blocks[0].embedding.weight.grad is not None


@pytest.mark.parametrize("kind", ["kmax", "conv"])
def test_vdcnn_other_downsamplings(kind):
    model = build_model({"base": "vdcnn9"}, 1, 4, 1024, {"width_mult": 0.125, "downsampling": kind})
    assert model(torch.randint(0, VOCAB_SIZE, (2, 1024))).shape == (2, 4) and n_convs(model, nn.Conv1d) == 9


def test_vdcnn_width_multiplier_shrinks_it():
    full = build_model({"base": "vdcnn29"}, 1, 4, 1024, {})
    small = build_model({"base": "vdcnn29"}, 1, 4, 1024, {"width_mult": 0.25})
    assert n_params(small) < n_params(full) / 10
    assert full.head[2].in_features == 512 * 8 and full.head[2].out_features == 2048
    assert small.head[2].in_features == 128 * 8 and small.head[2].out_features == 512
    with pytest.raises(ValueError, match="too short"):
        build_model({"base": "vdcnn9"}, 1, 4, 32, {})
