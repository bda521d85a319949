"""ResNeXt: Bhyravabhottla & Lee's "ResNext" as they describe it, and the real ResNeXt-50 (32x4d).

"resnext" follows Sec. 3 ("ResNext Architecture") of Bhyravabhottla & Lee literally: four groups of two convs with
64, 128, 256, 512 filters, each conv followed by BN then ReLU, a 2x2 max-pool after each group, global average
pool, FC num_classes (softmax in the loss). The paper does not give the kernel size or padding: 3x3 'same' convs
(with bias, the Keras default) are used. Note that this description has NO residual connections and NO grouped
convolutions, although the text calls it ResNeXt and invokes residual connections and split-transform-merge: as
described it is a plain 8-conv VGG-style network. The suite follows the description by default (it is the only
specification of the network trained); opts {"resnext_variant": "resnext50_32x4d"}, or an architecture override
{base: resnext50_32x4d} in the grid, gives a real ResNeXt (Xie et al. 2017) as the alternative reading.
Blocks: each conv with its BN/activation/dropout ("conv1".."conv8"), the group's max-pool attached to its last conv;
head: global average pool + Linear. A hierarchy gives the convs per group (4 entries; default [2, 2, 2, 2]).

"resnext50_32x4d" is built by bench.models.resnet (bottleneck units [3,4,6,3], groups 32, width_per_group 4);
with opts {"stem": "imagenet"} and 1000 classes it has torchvision's 25,028,904 parameters. The stem defaults to
the CIFAR one (3x3 conv, no max-pool), like the suite's ResNets.
"""

from bench.models import resnet
from bench.models.common import BlockNet, classifier, width
from bench.models.vgg import ConvBlock

BASES = {
    "resnext": [64, 128, 256, 512],  # filters per group (Bhyravabhottla & Lee, Sec. 3)
    "resnext50_32x4d": None,  # built by bench.models.resnet
}
VARIANTS = ("paper", "resnext50_32x4d")


def build(base, hierarchy, in_channels, num_classes, input_size, opts) -> BlockNet:
    variant = opts.get("resnext_variant", "paper") if base == "resnext" else base
    if variant not in VARIANTS:
        raise ValueError(f"unknown resnext_variant '{variant}' ({', '.join(VARIANTS)})")
    if variant == "resnext50_32x4d":
        return resnet.build("resnext50_32x4d", hierarchy, in_channels, num_classes, input_size, opts)

    groups = BASES[base]
    convs = list(hierarchy or [2] * len(groups))
    if len(convs) != len(groups) or min(convs) < 1:
        raise ValueError(f"{base}: a hierarchy gives the convs of each of the {len(groups)} groups, got {convs}")
    mult = opts.get("width_mult", 1.0)
    blocks, names, cin, size = [], [], in_channels, input_size
    for filters, n in zip(groups, convs):
        cout = width(filters, mult)
        for i in range(n):
            blocks.append(ConvBlock(cin, cout, i == n - 1, opts))
            names.append(f"conv{len(blocks)}")
            cin = cout
        size //= 2
    if size < 1:
        raise ValueError(f"{base}: {input_size}-px input is too small for {len(groups)} pools")
    head = classifier(cin, size, num_classes, dict(opts, head_pool="avg"))
    return BlockNet(blocks, head, (in_channels, input_size, input_size), num_classes, block_names=names)
