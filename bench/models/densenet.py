"""DenseNets (Huang et al. 2017) from a config: growth rate k, layers per dense block, stem, bottleneck, compression.

Dense layer (pre-activation, "B"): BN -> activation -> 1x1 conv to bn_size*k -> BN -> activation -> 3x3 conv to k
-> dropout, its k new maps concatenated to its input. Transition ("C"): BN -> activation -> 1x1 conv to
floor(compression * channels) -> 2x2 average pool. Stem "cifar": one 3x3 conv (no pool); "imagenet": 7x7 stride-2
conv -> BN -> activation -> 3x3 stride-2 max-pool (torchvision's). Head: BN -> activation -> global average pool ->
Linear. Convs have no bias (as in torchvision).

Blocks: the stem, then each dense block and each transition in order ("stem", "dense1", "trans1", "dense2", ...,
"denseN"); the head is the final BN/activation/pool/Linear. A hierarchy (or opts["block_config"]) replaces the layers
per dense block; opts["growth_rate"], ["num_init_features"], ["bn_size"], ["compression"], ["stem"] replace the
base's values; width_mult scales k and the initial features.

Bases:
  densenet121     torchvision.models.densenet121 (k=32, [6,12,24,16], 64 initial features, imagenet stem):
                  7,978,856 parameters for 1000 classes, the same as torchvision's.
  densenet_bc100  the CIFAR DenseNet-BC of Huang et al. (depth 100, k=12, 3 blocks of (100-4)/6 = 16 layers,
                  2k initial features, cifar stem, compression 0.5).
  densenet        Bhyravabhottla & Lee's DenseNet (Sec. 3, "DenseNet Architecture", CIFAR-100). The paper gives
                  only "a conv followed by BN and ReLU, dense blocks of bottleneck and conv layers with
                  concatenation, GAP, FC softmax": no depth, growth rate, block count, transitions or compression.
                  Where it is silent the suite uses densenet_bc100 (the usual CIFAR DenseNet); where it is explicit
                  it is followed: the stem conv is followed by BN -> ReLU (stem "cifar_bn"), which adds one BN of
                  2k channels (48 parameters) to densenet_bc100. opts {"stem": "cifar"} gives densenet_bc100 exactly.
"""

import math

import torch
from torch import nn

from bench.models.common import BlockNet, activation, classifier, dropout, width

BASES = {
    "densenet121": {"growth_rate": 32, "block_config": [6, 12, 24, 16], "num_init_features": 64, "stem": "imagenet"},
    "densenet_bc100": {"growth_rate": 12, "block_config": [16, 16, 16], "stem": "cifar"},
    "densenet": {"growth_rate": 12, "block_config": [16, 16, 16], "stem": "cifar_bn"},
}
DEFAULTS = {"bn_size": 4, "compression": 0.5, "num_init_features": None}  # None: 2 * growth_rate


def norm(channels: int, opts: dict) -> nn.Module:
    return nn.BatchNorm2d(channels) if opts.get("bn", True) else nn.Identity()


def preact(channels: int, opts: dict) -> list[nn.Module]:
    """BN -> activation before a conv. Without BN the activation must not work in place: its input is the block's
    input, which the concatenation (and whoever holds a block's output) still needs."""
    act = activation(opts)
    if not opts.get("bn", True):
        act.inplace = False
    return [norm(channels, opts), act]


def conv(cin: int, cout: int, kernel: int, opts: dict, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=opts.get("conv_bias", False))


class DenseLayer(nn.Module):
    """x -> cat(x, dropout(conv3x3(act(BN(conv1x1(act(BN(x))))))))."""

    def __init__(self, cin: int, growth: int, bn_size: int, opts: dict):
        super().__init__()
        self.bottleneck = nn.Sequential(*preact(cin, opts), conv(cin, bn_size * growth, 1, opts))
        self.conv = nn.Sequential(
            norm(bn_size * growth, opts),
            activation(opts),
            conv(bn_size * growth, growth, 3, opts),
            dropout(opts, spatial=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.bottleneck(x))], 1)


def dense_block(cin: int, layers: int, growth: int, bn_size: int, opts: dict) -> tuple[nn.Sequential, int]:
    block = nn.Sequential(*(DenseLayer(cin + i * growth, growth, bn_size, opts) for i in range(layers)))
    return block, cin + layers * growth


def transition(cin: int, compression: float, opts: dict) -> tuple[nn.Sequential, int]:
    cout = max(1, int(math.floor(cin * compression)))
    return nn.Sequential(*preact(cin, opts), conv(cin, cout, 1, opts), nn.AvgPool2d(2)), cout


def stem(kind: str, in_channels: int, cout: int, opts: dict) -> tuple[nn.Sequential, int]:
    """(stem, its downsampling factor)."""
    if kind == "imagenet":
        return nn.Sequential(
            conv(in_channels, cout, 7, opts, 2), norm(cout, opts), activation(opts), nn.MaxPool2d(3, 2, 1)
        ), 4
    if kind == "cifar":
        return nn.Sequential(conv(in_channels, cout, 3, opts)), 1
    if kind == "cifar_bn":
        return nn.Sequential(conv(in_channels, cout, 3, opts), norm(cout, opts), activation(opts)), 1
    raise ValueError(f"unknown DenseNet stem '{kind}' (cifar, cifar_bn, imagenet)")


def build(base, hierarchy, in_channels, num_classes, input_size, opts) -> BlockNet:
    cfg = {**DEFAULTS, **BASES[base]}
    cfg.update(
        {
            key: opts[key]
            for key in ("growth_rate", "block_config", "num_init_features", "bn_size", "compression", "stem")
            if opts.get(key) is not None
        }
    )
    block_config = list(hierarchy or cfg["block_config"])
    if not block_config or min(block_config) < 1:
        raise ValueError(f"{base}: a DenseNet hierarchy needs at least one layer per block, got {block_config}")
    mult = opts.get("width_mult", 1.0)
    growth = width(cfg["growth_rate"], mult)
    init = width(cfg["num_init_features"] or 2 * cfg["growth_rate"], mult)

    first, reduction = stem(cfg["stem"], in_channels, init, opts)
    blocks, names, channels = [first], ["stem"], init
    for i, layers in enumerate(block_config, start=1):
        block, channels = dense_block(channels, layers, growth, cfg["bn_size"], opts)
        blocks.append(block)
        names.append(f"dense{i}")
        if i < len(block_config):
            block, channels = transition(channels, cfg["compression"], opts)
            blocks.append(block)
            names.append(f"trans{i}")
            reduction *= 2
    size = input_size // reduction
    if size < 1:
        raise ValueError(
            f"{base}: {input_size}-px input is too small for a stem and {len(block_config) - 1} "
            f"transitions (downsampling x{reduction})"
        )
    head = nn.Sequential(*preact(channels, opts), classifier(channels, size, num_classes, dict(opts, head_pool="avg")))
    return BlockNet(blocks, head, (in_channels, input_size, input_size), num_classes, block_names=names)
