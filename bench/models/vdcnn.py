"""Conneau et al.'s very deep CNN (VD-CNN) for character-level text classification
(docs/methods/si-forward.md#36-vd-cnn).

Input: a LongTensor B x L of character indices (L = input_size, 1024 in this suite). Index 0 is padding (its
embedding is held at zero, padding_idx=0); the vocabulary is the data layer's (bench.data.text.VOCAB_SIZE = 69:
Conneau's 67 symbols, lower-case letters, digits, punctuation and space, at 2..68, plus padding 0 and unknown 1;
opts["vocab_size"] overrides it).

    lookup table (vocab x 16) -> temporal conv k3, 64 filters
    -> stages of 64, 128, 256, 512 feature maps, each `n` conv blocks of 2 x [Conv1d k3 pad 1 -> BN -> ReLU]
       (n per stage: depth 9 (1,1,1,1), 17 (2,2,2,2), 29 (5,5,2,2), 49 (8,8,5,3); depth = 1 + 2 * sum(n)),
       the length halved between stages, the width doubled by the next stage's first conv
    -> k-max pooling (k=8, temporal order kept) -> FC 2048 -> ReLU -> FC 2048 -> ReLU -> FC K

Blocks (the unit layer-wise training trains, docs/methods/si-forward.md#35-ambiguities item 4): block 0 = the embedding
with the temporal conv
("embed_conv"), then every conv (Conv1d + BN + ReLU) is its own block ("s<stage>c<conv>"), and the downsampling
between stages belongs to the stage's last conv. So a depth-d model has d blocks and d Conv1d layers.

opts: width_mult (conv widths and the two 2048s), vocab_size (69), embedding_dim (16), downsampling ("maxpool":
k3 s2 p1, Conneau's best and the default; "kmax": k-max pooling to half the length; "conv": the next stage's first
conv has stride 2), bn (True), nonlinearity, dropout (none in Conneau: default 0; Dropout1d after conv activations,
Dropout after the hidden FCs, head_dropout overrides the latter), conv_bias (False: a bias before BN is redundant;
the temporal conv, which no BN follows, keeps its bias), stem_bn (False: Conneau's temporal conv is linear; True
adds BN + activation after it), init ("he": He-normal convs as in Conneau; "default": PyTorch's). Conneau's
optional ResNet shortcuts are not built (off in the paper's best results and they would cross the per-conv blocks).
"""

import torch
from torch import nn

from bench.data.text import VOCAB_SIZE  # 67 symbols + padding 0 + unknown 1
from bench.models.common import BlockNet, activation, width

BASES = {
    "vdcnn9": (1, 1, 1, 1),
    "vdcnn17": (2, 2, 2, 2),
    "vdcnn29": (5, 5, 2, 2),
    "vdcnn49": (8, 8, 5, 3),
}
STAGE_WIDTHS = (64, 128, 256, 512)
STEM_WIDTH = 64
FC_WIDTH = 2048
K_MAX = 8
EMBEDDING_DIM = 16


def kmax_pool(x: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    """The k largest values along `dim`, kept in their original order (Kalchbrenner et al.'s k-max pooling)."""
    idx = x.topk(k, dim=dim).indices.sort(dim=dim).values
    return x.gather(dim, idx)


class KMaxPool1d(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x):
        return kmax_pool(x, self.k, dim=-1)

    def extra_repr(self) -> str:
        return f"k={self.k}"


def conv_dropout(opts: dict) -> nn.Module:
    p = float(opts.get("dropout", 0.0))
    if p <= 0:
        return nn.Identity()
    return nn.Dropout1d(p) if opts.get("dropout_kind", "channel") == "channel" else nn.Dropout(p)


class EmbedConv(nn.Module):
    """Block 0: character lookup table (B x L -> B x dim x L) and the temporal conv (k3, 64 filters)."""

    def __init__(self, vocab: int, dim: int, cout: int, opts: dict):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.conv = nn.Conv1d(dim, cout, 3, padding=1)
        self.post = (
            nn.Sequential(nn.BatchNorm1d(cout), activation(opts)) if opts.get("stem_bn", False) else nn.Identity()
        )

    def forward(self, x):
        return self.post(self.conv(self.embedding(x).transpose(1, 2)))


class ConvBlock(nn.Sequential):
    """Conv1d k3 (stride 1, or 2 for conv downsampling) -> BN -> activation -> dropout [-> downsampling]."""

    def __init__(self, cin: int, cout: int, stride: int, down: nn.Module | None, opts: dict):
        bn = opts.get("bn", True)
        layers = [
            nn.Conv1d(cin, cout, 3, stride=stride, padding=1, bias=opts.get("conv_bias", not bn)),
            nn.BatchNorm1d(cout) if bn else nn.Identity(),
            activation(opts),
            conv_dropout(opts),
        ]
        if down is not None:
            layers.append(down)
        super().__init__(*layers)


def head(channels: int, num_classes: int, opts: dict) -> nn.Sequential:
    mult = opts.get("width_mult", 1.0)
    hidden = width(FC_WIDTH, mult)
    p = float(opts.get("head_dropout", opts.get("dropout", 0.0)))
    drop = (lambda: nn.Dropout(p)) if p > 0 else nn.Identity
    return nn.Sequential(
        KMaxPool1d(K_MAX),
        nn.Flatten(),
        nn.Linear(channels * K_MAX, hidden),
        activation(opts),
        drop(),
        nn.Linear(hidden, hidden),
        activation(opts),
        drop(),
        nn.Linear(hidden, num_classes),
    )


def he_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv1d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build(base, hierarchy, in_channels, num_classes, input_size, opts) -> BlockNet:
    """`in_channels` is unused (characters come as indices); `input_size` is the text length L."""
    if hierarchy:
        raise ValueError(f"{base}: VD-CNN takes no hierarchy, got {hierarchy}")
    per_stage = BASES[base]
    mult = opts.get("width_mult", 1.0)
    kind = opts.get("downsampling", "maxpool")
    if kind not in ("maxpool", "kmax", "conv"):
        raise ValueError(f"{base}: unknown downsampling '{kind}' (maxpool, kmax or conv)")
    cin = width(STEM_WIDTH, mult)
    blocks = [EmbedConv(opts.get("vocab_size", VOCAB_SIZE), opts.get("embedding_dim", EMBEDDING_DIM), cin, opts)]
    names, length = ["embed_conv"], input_size
    for s, (n, planes) in enumerate(zip(per_stage, STAGE_WIDTHS)):
        cout = width(planes, mult)
        for c in range(2 * n):
            stride = 2 if kind == "conv" and s > 0 and c == 0 else 1
            down = None
            if c == 2 * n - 1 and s < len(per_stage) - 1 and kind != "conv":
                half = (length + 1) // 2  # the length after max-pool k3 s2 p1 (and after a stride-2 conv)
                down = nn.MaxPool1d(3, 2, 1) if kind == "maxpool" else KMaxPool1d(half)
            if stride == 2 or down is not None:
                length = (length + 1) // 2
            blocks.append(ConvBlock(cin, cout, stride, down, opts))
            names.append(f"s{s + 1}c{c + 1}")
            cin = cout
    if length < K_MAX:
        raise ValueError(
            f"{base}: a {input_size}-character input is too short ({length} steps left for {K_MAX}-max pooling)"
        )
    net = BlockNet(
        blocks, head(cin, num_classes, opts), (input_size,), num_classes, block_names=names, input_dtype=torch.long
    )
    if opts.get("init", "he") == "he":
        he_init(net)
    return net
