"""ResNets from residual units per stage (BasicBlock or Bottleneck), with a CIFAR or an ImageNet stem.

Blocks: the stem, then one block per residual unit. Every conv is followed by BN; the residual add comes after
the last BN of a unit, before its activation; dropout (Ma et al.) follows every activation. A hierarchy
replaces the base's units per stage (Ma's ResNet18_r4 = [1,1,2,2]).

Bottleneck units take torchvision's ResNeXt options: `groups` and `width_per_group` (opts; defaults 1 and 64 give
the plain ResNet), the grouped 3x3 conv having int(planes * width_per_group / 64) * groups channels (at least
one per group, so that a small width_mult still builds). "resnext50_32x4d" is ResNet-50 with 32 groups x 4.
Stem and stage widths (64/128/256/512, x4 out of a Bottleneck) are scaled by width_mult x feat_mult
(`common.conv_mult`: feat_mult is the N&E code's --feat-mult, which scales the same widths).
"""

from torch import nn

from bench.models.common import BlockNet, activation, classifier, conv_mult, dropout, width

FEAT_MULT = True  # build() applies opts["feat_mult"] (bench.models.build_model refuses it for other families)


class ConvBN(nn.Sequential):
    def __init__(self, cin, cout, kernel, stride, opts, groups=1):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=opts.get("conv_bias", False))]
        layers.append(nn.BatchNorm2d(cout) if opts.get("bn", True) else nn.Identity())
        super().__init__(*layers)


class Residual(nn.Module):
    """convs (each ConvBN, activation and dropout between them) + shortcut, then activation and dropout."""

    def __init__(self, convs: list[nn.Module], shortcut: nn.Module, opts: dict):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.acts = nn.ModuleList(nn.Sequential(activation(opts), dropout(opts, spatial=True)) for _ in convs)
        self.shortcut = shortcut

    def forward(self, x):
        out = x
        for i, conv in enumerate(self.convs):
            out = conv(out)
            if i < len(self.convs) - 1:
                out = self.acts[i](out)
        return self.acts[-1](out + self.shortcut(x))


def basic(cin, planes, stride, opts):
    convs = [ConvBN(cin, planes, 3, stride, opts), ConvBN(planes, planes, 3, 1, opts)]
    short = ConvBN(cin, planes, 1, stride, opts) if stride != 1 or cin != planes else nn.Identity()
    return Residual(convs, short, opts), planes


def bottleneck(cin, planes, stride, opts):
    out, groups = planes * 4, opts.get("groups", 1)
    mid = max(1, int(planes * (opts.get("width_per_group", 64) / 64))) * groups
    convs = [ConvBN(cin, mid, 1, 1, opts), ConvBN(mid, mid, 3, stride, opts, groups), ConvBN(mid, out, 1, 1, opts)]
    short = ConvBN(cin, out, 1, stride, opts) if stride != 1 or cin != out else nn.Identity()
    return Residual(convs, short, opts), out


BASES = {
    "resnet18": (basic, [2, 2, 2, 2]),
    "resnet34": (basic, [3, 4, 6, 3]),
    "resnet50": (bottleneck, [3, 4, 6, 3]),
    "resnet101": (bottleneck, [3, 4, 23, 3]),
    "resnet152": (bottleneck, [3, 8, 36, 3]),
    "resnext50_32x4d": (bottleneck, [3, 4, 6, 3]),
}
# options a base implies (the experiment's opts override them)
BASE_OPTS = {"resnext50_32x4d": {"groups": 32, "width_per_group": 4}}


def stem(in_channels, cout, opts):
    if opts.get("stem", "cifar") == "imagenet":
        return nn.Sequential(ConvBN(in_channels, cout, 7, 2, opts), activation(opts), nn.MaxPool2d(3, 2, 1)), 4
    return nn.Sequential(ConvBN(in_channels, cout, 3, 1, opts), activation(opts), dropout(opts, spatial=True)), 1


def build(base, hierarchy, in_channels, num_classes, input_size, opts) -> BlockNet:
    unit, units = BASES[base]
    opts = {**BASE_OPTS.get(base, {}), **opts}
    units = list(hierarchy or units)
    if len(units) != 4:
        raise ValueError(f"{base}: a ResNet hierarchy has 4 stages, got {units}")
    mult = conv_mult(opts)
    first, reduction = stem(in_channels, width(64, mult), opts)
    blocks, cin = [first], width(64, mult)
    for stage, n in enumerate(units):
        planes = width(64 * 2**stage, mult)
        for i in range(n):
            block, cin = unit(cin, planes, 2 if stage > 0 and i == 0 else 1, opts)
            blocks.append(block)
        if stage > 0:
            reduction *= 2
    size = max(1, input_size // reduction)
    opts = dict(opts, head_pool="avg")
    return BlockNet(
        blocks, classifier(cin, size, num_classes, opts), (in_channels, input_size, input_size), num_classes
    )
