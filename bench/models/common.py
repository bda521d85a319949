"""Pieces shared by the model families: the block container, activations, dropout, the classifier head."""

import torch
from torch import nn

from bench.models.recompute import checkpointed


class BlockNet(nn.Module):
    """blocks[0] -> blocks[1] -> ... -> head.

    `input_shape` (C, H, W) for images or (L,) for token sequences, and `num_classes`, say what it was built for;
    `input_dtype` is torch.float32 for images, torch.long for character indices. `block_names` labels the blocks
    (e.g. "conv2" in Bhyravabhottla & Lee's 12-layer CNN) so that a cell can name the layer it counts.

    `recompute` (set by the run: config `activation_checkpointing`, bench.cost.resources.recompute_rule): every block
    that trains (training mode, gradients on) keeps only its input and runs again in the backward
    (bench.models.recompute): the same values and gradients in less device memory, one more forward of the blocks.
    """

    recompute = False

    def __init__(
        self,
        blocks: list[nn.Module],
        head: nn.Module,
        input_shape: tuple,
        num_classes: int,
        block_names: list[str] | None = None,
        input_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.input_dtype = input_dtype
        self.block_names = list(block_names) if block_names else [f"block{i}" for i in range(len(blocks))]
        if len(self.block_names) != len(self.blocks):
            raise ValueError("one name per block")

    def part(self, name: str) -> nn.Module:
        """The block called `name`, or the head ("head")."""
        if name == "head":
            return self.head
        if name not in self.block_names:
            raise KeyError(f"no block '{name}' (blocks: {', '.join(self.block_names)})")
        return self.blocks[self.block_names.index(name)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.run_blocks(x))

    def run_blocks(self, x: torch.Tensor, first: int = 0) -> torch.Tensor:
        """blocks[first:] on x (the features after blocks < first); the training forward of every method that trains
        the model, or a range of its blocks, end to end, so that `recompute` applies to all of them. A block in eval
        mode (frozen, dropped) or a forward without grad keeps nothing to recompute and runs plainly."""
        for block in self.blocks[first:]:
            x = checkpointed(block, x) if self.recompute and block.training and torch.is_grad_enabled() else block(x)
        return x


def keras_init(module: nn.Module) -> None:
    """Keras' default initialisers for one module: Glorot-uniform kernels, zero biases."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def apply_keras_defaults(model: nn.Module) -> nn.Module:
    """A model as Keras builds it by default: Glorot-uniform kernels and zero biases (keras_init), and every
    BatchNormalization with momentum 0.99 and epsilon 1e-3 (PyTorch's momentum is the weight of the new batch:
    1 - 0.99 = 0.01; its defaults are 0.1 and 1e-5)."""
    model.apply(keras_init)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum, m.eps = 0.01, 1e-3
    return model


def width(channels: int, mult: float) -> int:
    return max(1, round(channels * mult))


def conv_mult(opts: dict) -> float:
    """The multiplier of a model's conv widths: the profile's `width_mult` times the model's `feat_mult` (default 1),
    the N&E code's --feat-mult, which widens the conv channels of its VGG and ResNet cfgs (int(channels x
    feat_mult); the same widths for the integer multipliers its recipes use) and nothing else: the hidden FC
    layers of `classifier` keep `width_mult` alone. Only the families that declare FEAT_MULT (VGG, ResNet)
    read it; `bench.models.build_model` refuses it for the others."""
    feat = opts.get("feat_mult", 1.0)
    if isinstance(feat, bool) or not isinstance(feat, (int, float)) or not feat > 0:
        raise ValueError(f"feat_mult must be a positive number, got {feat!r}")
    return opts.get("width_mult", 1.0) * feat


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
    """pool -> hidden FC layers -> output Linear. head_pool: 'avg' averages the map to 1x1, 'flatten' keeps it,
    'adaptive<N>' average-pools it to N x N (torchvision's VGG: 'adaptive7')."""
    mult = opts.get("width_mult", 1.0)
    pool = opts.get("head_pool", "avg")
    if pool == "avg":
        layers, features = [nn.AdaptiveAvgPool2d(1), nn.Flatten()], channels
    elif pool.startswith("adaptive"):
        n = int(pool.removeprefix("adaptive"))
        layers, features = [nn.AdaptiveAvgPool2d(n), nn.Flatten()], channels * n * n
    elif pool == "flatten":
        layers, features = [nn.Flatten()], channels * spatial * spatial
    else:
        raise ValueError(f"unknown head_pool '{pool}'")
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
