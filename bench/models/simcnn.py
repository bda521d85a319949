"""Belilovsky, Eickenberg & Oyallon's SimCNN for CIFAR-10 (docs/methods/belilovsky.md#21-trunk to 2.2; eugenium/layerCNN
README recipes).

Trunk block j = [psi] -> conv3x3 (stride 1, pad 1) -> BN (identity without BN) -> activation. psi is the invertible
space-to-depth by 2 (C x H x W -> 4C x H/2 x W/2); it opens block j+1 for every j in the recipe's `down` list, and
that block doubles the width. The recipes (k = the paper's k = layerCNN's nlin + 1):

    k=1    --ncnn 5 --nlin 0 --feature_size 256 (down [1,2], no BN): 256@32 256@32 psi>512@16 psi>1024@8 1024@8
    k=2,3  --ncnn 4 --nlin 1|2 --feature_size 128 --down [1] --bn 1:    128@32 128@32 psi>256@16 256@16

Only block 0's conv has a bias, and only without BN (layerCNN: `bias=not batchnorm` for the first conv,
`bias=False` for every later block and every aux conv). BN comes from the recipe, not from opts["bn"] (the k=1
recipe has none, k=2,3 have it; a paper grid's global `bn: true` must not change SimCNN-k1).

The head is the k-specific auxiliary classifier of the last block (docs/methods/belilovsky.md#22-auxiliary-heads,
docs/methods/belilovsky.md#24-ambiguities), see `aux_head`; the greedy
method builds one per block with `aux_heads`. Default PyTorch init (the reference code sets none).
opts used: width_mult (trunk and aux widths), width_aux (128), nonlinearity (relu), dropout (none in the
reference; after each trunk activation when > 0); hierarchy must be None.
"""

import math

import torch.nn.functional as F
from torch import nn

from bench.models.common import BlockNet, activation, dropout, width

# k, trunk width of block 0, number of blocks, blocks after which the next one opens with psi, BN
BASES = {
    "simcnn_k1": dict(k=1, feature_size=256, ncnn=5, down=[1, 2], bn=False),
    "simcnn_k2": dict(k=2, feature_size=128, ncnn=4, down=[1], bn=True),
    "simcnn_k3": dict(k=3, feature_size=128, ncnn=4, down=[1], bn=True),
}
WIDTH_AUX = 128  # layerCNN --width_aux default: the aux convs' width before any downsampling


class SpaceToDepth(nn.Module):
    """psi: the invertible space-to-depth by 2, C x H x W -> 4C x H/2 x W/2 (torch's pixel_unshuffle).

    Channel order: pixel_unshuffle puts output channel c*4 + 2*dy + dx (channel-major); layerCNN's psi (and its psi2)
    puts dy*2C + dx*C + c (offset-major, checked by re-deriving its permute/split/stack ops). The two differ by a
    fixed permutation of the channels. psi is always followed by a conv3x3 that mixes all input channels, so the
    permutation is absorbed by permuting that conv's input-channel weights: the same function class, and, with
    i.i.d. default init, the same distribution at init. pixel_shuffle(., 2) inverts it exactly.
    """

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return F.pixel_unshuffle(x, self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def recipe(base: str) -> dict:
    return dict(BASES[base])


def layout(base: str, input_size: int, opts: dict) -> list[dict]:
    """Per block: whether it opens with psi, its output channels, output resolution and downsamplings so far."""
    r = recipe(base)
    mult = opts.get("width_mult", 1.0)
    rows, planes, size, downs = [], r["feature_size"], input_size, 0
    for j in range(r["ncnn"]):
        psi = j > 0 and (j - 1) in r["down"]
        if psi:
            if size % 2:
                raise ValueError(f"{base}: a {input_size}-px input is too small for {len(r['down'])} psi downsamplings")
            planes, size, downs = planes * 2, size // 2, downs + 1
        rows.append(dict(psi=psi, cout=width(planes, mult), resolution=size, downsamplings=downs))
    if size < 2:
        raise ValueError(f"{base}: a {input_size}-px input is too small (the head pools to 2x2)")
    return rows


class TrunkBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, psi: bool, bias: bool, bn: bool, opts: dict):
        layers = [SpaceToDepth(2)] if psi else []
        layers += [
            nn.Conv2d(4 * cin if psi else cin, cout, 3, 1, 1, bias=bias),
            nn.BatchNorm2d(cout) if bn else nn.Identity(),
            activation(opts),
            dropout(opts, spatial=True),
        ]
        super().__init__(*layers)


def aux_head(
    channels: int,
    resolution: int,
    k: int,
    num_classes: int,
    opts: dict,
    *,
    downsamplings: int | None = None,
    bn: bool | None = None,
) -> nn.Sequential:
    """Belilovsky's auxiliary classifier for a block with `channels` x `resolution` x `resolution` outputs.

    (k-1) x [conv3x3 (width_aux, no bias) -> BN -> activation] -> average pool to 2x2 -> BN -> Linear(w*4 -> K),
    w = width_aux, or `channels` when k=1 (no aux convs). width_aux = opts.get("width_aux", 128) doubled at each
    downsampling before the block (`downsamplings`; None = as many as a 32-px CIFAR input has had at `resolution`)
    and scaled by width_mult. `bn` None = the recipe's: none for k=1, BN for k>=2 (layerCNN's
    auxillary_classifier takes the trunk's --bn flag, and without it both its conv BNs and the BN before the
    Linear are identities). The pool is layerCNN's avg_pool2d with kernel resolution/2 (= adaptive 2x2 for even
    resolutions).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if resolution < 2:
        raise ValueError(f"the aux head pools to 2x2; a {resolution}-px map is too small")
    if bn is None:
        bn = k >= 2
    if downsamplings is None:
        downsamplings = max(0, round(math.log2(32 / resolution)))
    mult = opts.get("width_mult", 1.0)
    layers, cin = [], channels
    w = width(opts.get("width_aux", WIDTH_AUX) * 2**downsamplings, mult) if k > 1 else channels
    for _ in range(k - 1):
        layers += [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w) if bn else nn.Identity(), activation(opts)]
        cin = w
    layers += [
        nn.AdaptiveAvgPool2d(2),
        nn.BatchNorm2d(cin) if bn else nn.Identity(),
        nn.Flatten(),
        nn.Linear(cin * 4, num_classes),
    ]
    return nn.Sequential(*layers)


def aux_heads(base: str, num_classes: int, input_size: int, opts: dict) -> list[nn.Sequential]:
    """A fresh auxiliary head for every block of `base` (the greedy method trains block j with head j)."""
    r = recipe(base)
    return [
        aux_head(
            row["cout"], row["resolution"], r["k"], num_classes, opts, downsamplings=row["downsamplings"], bn=r["bn"]
        )
        for row in layout(base, input_size, opts)
    ]


def build(base, hierarchy, in_channels, num_classes, input_size, opts) -> BlockNet:
    if hierarchy:
        raise ValueError(f"{base}: SimCNN takes no hierarchy, got {hierarchy}")
    r = recipe(base)
    rows = layout(base, input_size, opts)
    blocks, cin = [], in_channels
    for j, row in enumerate(rows):
        blocks.append(TrunkBlock(cin, row["cout"], row["psi"], bias=j == 0 and not r["bn"], bn=r["bn"], opts=opts))
        cin = row["cout"]
    last = rows[-1]
    head = aux_head(
        last["cout"], last["resolution"], r["k"], num_classes, opts, downsamplings=last["downsamplings"], bn=r["bn"]
    )
    names = [f"conv{j + 1}" for j in range(len(blocks))]
    return BlockNet(blocks, head, (in_channels, input_size, input_size), num_classes, block_names=names)
