"""VGG networks from stage lists: conv widths per resolution stage, a 2x2 max-pool after each stage.

Each block is one 3x3 conv -> BN -> activation -> dropout, plus the max-pool when it ends a stage. A hierarchy
([convs per stage]) extends a base by repeating each stage's output width (docs/methods/predsim.md#15-hierarchies), so
Ma et al.'s
VGG16_e1 [3,3,4,4,4] is VGG16 with one more conv per stage. Conv widths are scaled by width_mult x feat_mult
(`common.conv_mult`: feat_mult is the N&E code's --feat-mult), the hidden FC widths by width_mult alone.
"""

from torch import nn

from bench.models.common import BlockNet, activation, classifier, conv_mult, dropout, width

FEAT_MULT = True  # build() applies opts["feat_mult"] (bench.models.build_model refuses it for other families)

BASES = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
    # the N&E code's vgg8b: 128 256 M 256 512 M 512 M 512 M (4 stages)
    "vgg8b": [[128, 256], [256, 512], [512], [512]],
}


def stage_widths(base: str, hierarchy: list[int] | None) -> list[list[int]]:
    stages = BASES[base]
    if hierarchy is None:
        return [list(s) for s in stages]
    if len(hierarchy) != len(stages):
        raise ValueError(f"{base} has {len(stages)} stages, hierarchy {hierarchy} has {len(hierarchy)}")
    return [(s + [s[-1]] * n)[:n] for s, n in zip(stages, hierarchy)]


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, pool: bool, opts: dict):
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=opts.get("conv_bias", True))]
        if opts.get("bn", True):
            layers.append(nn.BatchNorm2d(cout))
        layers += [activation(opts), dropout(opts, spatial=True)]
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


def build(base, hierarchy, in_channels, num_classes, input_size, opts) -> BlockNet:
    mult = conv_mult(opts)
    blocks, cin, size = [], in_channels, input_size
    for stage in stage_widths(base, hierarchy):
        for i, cout in enumerate(stage):
            cout = width(cout, mult)
            last = i == len(stage) - 1
            blocks.append(ConvBlock(cin, cout, last, opts))
            cin = cout
        size //= 2
    if size < 1:
        raise ValueError(f"{base}: {input_size}-px input is too small for {len(BASES[base])} pools")
    return BlockNet(
        blocks, classifier(cin, size, num_classes, opts), (in_channels, input_size, input_size), num_classes
    )
