"""Pieces shared by the model families: the block container, activations, dropout, the classifier head."""
import torch
from torch import nn


class BlockNet(nn.Module):
    """blocks[0] -> blocks[1] -> ... -> head. `input_shape` and `num_classes` say what it was built for."""

    def __init__(self, blocks: list[nn.Module], head: nn.Module, input_shape: tuple, num_classes: int):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def width(channels: int, mult: float) -> int:
    return max(1, round(channels * mult))


def activation(opts: dict) -> nn.Module:
    kind = opts.get("nonlinearity", "relu")
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leakyrelu":
        return nn.LeakyReLU(opts.get("negative_slope", 0.01), inplace=True)
    raise ValueError(f"unknown nonlinearity '{kind}'")


def dropout(opts: dict, spatial: bool) -> nn.Module:
    p = float(opts.get("dropout", 0.0))
    if p <= 0:
        return nn.Identity()
    return nn.Dropout2d(p) if spatial and opts.get("dropout_kind", "channel") == "channel" else nn.Dropout(p)


def classifier(channels: int, spatial: int, num_classes: int, opts: dict) -> nn.Sequential:
    """pool ('flatten' keeps the map, 'avg' averages it to 1x1) -> hidden FC layers -> output Linear."""
    mult = opts.get("width_mult", 1.0)
    if opts.get("head_pool", "avg") == "avg":
        layers, features = [nn.AdaptiveAvgPool2d(1), nn.Flatten()], channels
    else:
        layers, features = [nn.Flatten()], channels * spatial * spatial
    for hidden in opts.get("head_hidden", []):
        hidden = width(hidden, mult)
        layers.append(nn.Linear(features, hidden))
        if opts.get("head_bn", False):
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(activation(opts))
        head_p = opts.get("head_dropout", opts.get("dropout", 0.0))
        if head_p > 0:
            layers.append(nn.Dropout(head_p))
        features = hidden
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)
