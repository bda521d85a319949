"""The layer chain of Learn & Drop (bench/methods/learn_drop): the conv layers it scores and drops, as steps on a
state, and the MACs of a part of the chain.

Layers. The scored "layers" are the network's conv layers in forward order (`conv_layers`): a VGG block (conv, BN,
activation, dropout, pool) is one layer; a ResNet's stem is one layer and every conv of every residual unit is one
layer, the unit's shortcut conv (when it has one) included, placed after the unit's main-path convs (torchvision's
module order: conv1, conv2[, conv3], downsample; `shortcut_position: first` puts it first). Each layer is a *step*
that maps a state to a state: between units the state is the activation x; inside a residual unit it is the pair
(main-path activation, skip tensor), so a cut inside a unit stores both (paper Fig. 4;
docs/methods/learn-drop.md#53-ambiguities item 5). The
skip tensor is the unit's input x while the shortcut conv is still in the head, its output once it is in the tail.
`resnet_cut: unit` allows cuts only at residual-unit boundaries (a cut is rounded down to the last whole unit;
a simpler variant, not the paper's). Any other block must hold at least one conv and is one layer (all its convs
scored together). The model's `head` (pool + dense layers) is never scored nor dropped: with L0 = #dense + 1, the
scoring runs only while the head holds at least two conv layers, and the last conv is never a candidate (Eq. 4
needs t+1).
"""

import contextlib
import copy
import io
from dataclasses import dataclass

import torch
from torch import nn


class BlockStep(nn.Module):
    """A whole block (VGG conv block, ResNet stem) as one layer: (x,) -> (block(x),)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, state: tuple) -> tuple:
        return (self.block(state[0]),)


class ResidualStep(nn.Module):
    """One conv of a `bench.models.resnet.Residual` unit. Inside the unit the state is (main, skip); the unit's
    first step turns (x,) into (x, x), its last step returns (act(main + skip),), exactly Residual.forward's ops."""

    def __init__(self, unit: nn.Module, part, first: bool, last: bool):
        super().__init__()
        self.first, self.last = first, last
        self.is_shortcut = part == "shortcut"
        self.conv = unit.shortcut if self.is_shortcut else unit.convs[part]
        self.act = unit.acts[part] if not self.is_shortcut and part < len(unit.convs) - 1 else None
        self.out_act = unit.acts[-1] if last else None

    def forward(self, state: tuple) -> tuple:
        main, skip = (state[0], state[0]) if self.first else state
        if self.is_shortcut:
            skip = self.conv(skip)
        else:
            main = self.conv(main)
            if self.act is not None:
                main = self.act(main)
        if self.last:
            return (self.out_act(main + skip),)
        return (main, skip)


class Chain(nn.Module):
    """steps[0] -> ... -> steps[-1] [-> classifier]: a tail part (returns the state) or a head (returns logits).
    Called with the state's tensors as arguments (x) or (main, skip)."""

    def __init__(self, steps, classifier: nn.Module | None = None):
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.classifier = classifier

    def forward(self, x, skip=None):
        state = (x,) if skip is None else (x, skip)
        for step in self.steps:
            state = step(state)
        if self.classifier is None:
            return state
        return self.classifier(state[0])


@dataclass
class Layer:
    index: int
    name: str
    step: nn.Module
    scored: list  # the conv weights (scored_tensors: conv_weight)
    params: list  # every parameter of the layer
    ends_block: bool  # a cut right after this layer is a block (residual-unit) boundary


def conv_layers(model: nn.Module, shortcut_position: str = "last") -> list[Layer]:
    """The model's conv layers in forward order as steps (module docstring). Checks that the layers and the
    classifier together own every parameter of the model exactly once."""
    from bench.models.resnet import Residual

    if shortcut_position not in ("last", "first"):
        raise ValueError(f"shortcut_position must be 'last' or 'first', got '{shortcut_position}'")
    names = getattr(model, "block_names", [f"block{i}" for i in range(len(model.blocks))])
    layers = []

    def add(name, step, convs, ends):
        layers.append(Layer(len(layers), name, step, [c.weight for c in convs], list(step.parameters()), ends))

    for b, block in enumerate(model.blocks):
        if isinstance(block, Residual):
            parts = list(range(len(block.convs)))
            if any(isinstance(m, nn.Conv2d) for m in block.shortcut.modules()):
                parts = parts + ["shortcut"] if shortcut_position == "last" else ["shortcut"] + parts
            for k, part in enumerate(parts):
                step = ResidualStep(block, part, k == 0, k == len(parts) - 1)
                convs = [m for m in step.conv.modules() if isinstance(m, nn.Conv2d)]
                add(
                    f"{names[b]}.{'shortcut' if part == 'shortcut' else f'conv{part}'}",
                    step,
                    convs,
                    k == len(parts) - 1,
                )
        else:
            convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
            if not convs:
                raise ValueError(f"learn_drop: block {names[b]} has no conv layer (unsupported model)")
            add(names[b], BlockStep(block), convs, True)
    owned = [id(p) for layer in layers for p in layer.params] + [id(p) for p in model.head.parameters()]
    if len(owned) != len(set(owned)) or set(owned) != {id(p) for p in model.parameters()}:
        raise ValueError("learn_drop: the conv layers and the head do not partition the model's parameters")
    return layers


def state_shapes(model: nn.Module, layers: list[Layer], device) -> list[list[tuple]]:
    """shapes[k]: the per-sample shapes of the state entering layer k (k = len(layers): the classifier's input).
    One sample of zeros through the steps in eval mode, no grad (nothing in the model changes)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        state = (torch.zeros((1, *model.input_shape), device=device),)
        shapes = [[tuple(t.shape[1:]) for t in state]]
        for layer in layers:
            state = layer.step(state)
            shapes.append([tuple(t.shape[1:]) for t in state])
    model.train(was_training)
    return shapes


def chain_macs(chain: nn.Module, shapes: list[tuple]) -> int:
    """Forward MACs of one sample through `chain` on inputs of the given per-sample shapes, counted by ptflops'
    'pytorch' backend (modules only, as bench.run.measure.forward_macs); the chain is copied to the CPU in eval mode."""
    from ptflops import get_model_complexity_info

    clone = copy.deepcopy(chain).cpu().eval()
    names = ["x", "skip"][: len(shapes)]

    def make_input(_):
        tensors = [torch.zeros((1, *s)) for s in shapes]
        return tensors[0] if len(tensors) == 1 else dict(zip(names, tensors))

    # with two inputs ptflops gets keyword arguments and prints a warning about the batch size (it is 1)
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        macs, _ = get_model_complexity_info(
            clone,
            tuple(shapes[0]),
            as_strings=False,
            print_per_layer_stat=False,
            input_constructor=make_input,
            backend="pytorch",
            verbose=False,
            backend_specific_config={"count_functional": False},
        )
    if macs is None:
        raise RuntimeError("ptflops could not count the MACs of a Learn & Drop head/tail")
    return int(macs)
