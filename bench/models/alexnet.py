"""AlexNet (Krizhevsky et al. 2012, torchvision's single-GPU form) for Karimi et al.'s small-image experiments.

Karimi et al. train "AlexNet" on CIFAR-10/100, Fashion-MNIST (padded to 32x32) and Raabin-WBC but give no
architecture details, so two presets are built from config lists (`opts["alexnet_preset"]`):

* "small" (default), for 32-px (and 28-px) inputs. Choices, since the paper is silent:
  - torchvision's conv widths 64, 192, 384, 256, 256 and kernels 5/3/3/3 for conv2-5 (padding keeps the size);
  - conv1 is 5x5, stride 1, padding 2 instead of 11x11 stride 4: on a 32-px image the ImageNet stem would leave
    a 7x7 map after one layer and a 1x1 map after the second pool; 5x5 stride 1 is the usual CIFAR port (cf.
    Krizhevsky's own cuda-convnet CIFAR nets, which use 5x5 stride-1 convs);
  - 2x2 max-pools (stride 2) after conv1, conv2 and conv5 (the positions of AlexNet's three pools), so a
    32-px input ends as a 256x4x4 map = 4096 features; 28-px inputs work too (28 -> 14 -> 7 -> 3);
  - no adaptive average pool: the classifier reads the flattened last map.
* "imagenet": torchvision.models.alexnet exactly (11x11 s4 p2 stem, 3x3 stride-2 max-pools,
  AdaptiveAvgPool2d(6)); 61,100,840 parameters for 1000 classes. Needs inputs of at least 63 px.

Both presets use torchvision's classifier, Dropout(0.5) -> Linear(features, 4096) -> ReLU -> Dropout(0.5) ->
Linear(4096, 4096) -> ReLU -> Linear(4096, K); an experiment may override its hidden widths (`head_hidden`),
their dropout (`head_dropout`) and add BatchNorm1d after each hidden Linear (`head_bn`, default off).
Options: width_mult scales every conv and hidden FC width; nonlinearity/negative_slope pick the activation;
bn (default False: AlexNet predates BatchNorm) adds BatchNorm2d after each conv, before the activation;
dropout (default 0) adds dropout after each conv's activation; conv_bias (default True, as in torchvision).
Blocks: conv1..conv5, each conv with its BN, activation and following pool; head: (avg-pool,) flatten, FCs.
AlexNet has no hierarchies: a hierarchy is refused (ValueError) rather than silently ignored.
"""

from torch import nn

from bench.models.common import BlockNet, activation, dropout, width

BASES = {"alexnet"}

# one entry per conv: (out channels, kernel, stride, padding, max-pool after as (kernel, stride) or None)
PRESETS = {
    "small": [
        (64, 5, 1, 2, (2, 2)),
        (192, 5, 1, 2, (2, 2)),
        (384, 3, 1, 1, None),
        (256, 3, 1, 1, None),
        (256, 3, 1, 1, (2, 2)),
    ],
    "imagenet": [
        (64, 11, 4, 2, (3, 2)),
        (192, 5, 1, 2, (3, 2)),
        (384, 3, 1, 1, None),
        (256, 3, 1, 1, None),
        (256, 3, 1, 1, (3, 2)),
    ],
}
AVGPOOL = {"small": None, "imagenet": 6}  # AdaptiveAvgPool2d output size before the classifier


def conv_block(cin, cout, kernel, stride, padding, pool, opts) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding, bias=opts.get("conv_bias", True))]
    if opts.get("bn", False):
        layers.append(nn.BatchNorm2d(cout))
    layers += [activation(opts), dropout(opts, spatial=True)]
    if pool:
        layers.append(nn.MaxPool2d(*pool))
    return nn.Sequential(*layers)


def head(features: int, num_classes: int, avgpool: int | None, opts: dict) -> nn.Sequential:
    mult = opts.get("width_mult", 1.0)
    p = float(opts.get("head_dropout", 0.5))
    layers = [nn.AdaptiveAvgPool2d(avgpool)] if avgpool else []
    layers.append(nn.Flatten())
    for hidden in opts.get("head_hidden", [4096, 4096]):
        hidden = width(hidden, mult)
        if p > 0:
            layers.append(nn.Dropout(p))
        layers.append(nn.Linear(features, hidden))
        if opts.get("head_bn", False):
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(activation(opts))
        features = hidden
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def build(base, hierarchy, in_channels, num_classes, input_size, opts) -> BlockNet:
    if hierarchy is not None:
        raise ValueError(f"alexnet has no hierarchies (got {hierarchy})")
    preset = opts.get("alexnet_preset", "small")
    if preset not in PRESETS:
        raise ValueError(f"alexnet: unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    mult = opts.get("width_mult", 1.0)
    blocks, cin, size = [], in_channels, input_size
    for cout, kernel, stride, padding, pool in PRESETS[preset]:
        size = (size + 2 * padding - kernel) // stride + 1
        if pool and size >= pool[0]:
            size = (size - pool[0]) // pool[1] + 1
        elif pool:
            size = 0
        if size < 1:
            raise ValueError(f"alexnet ({preset}): a {input_size}-px input is too small")
        cout = width(cout, mult)
        blocks.append(conv_block(cin, cout, kernel, stride, padding, pool, opts))
        cin = cout
    avgpool = AVGPOOL[preset]
    features = cin * (avgpool or size) ** 2
    return BlockNet(
        blocks,
        head(features, num_classes, avgpool, opts),
        (in_channels, input_size, input_size),
        num_classes,
        block_names=[f"conv{i + 1}" for i in range(len(blocks))],
    )
