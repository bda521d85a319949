"""The 12-layer CNN of Bhyravabhottla & Lee (Sec. 3) as built in their notebook (LIII_lab,
docs/methods/layer-to-layer.md).

Keras Sequential, layer indices 0-11:
Conv32(3x3, same, ReLU) · Conv32 · MaxPool2 · Dropout .25 · Conv64 · Conv64 · MaxPool2 · Dropout .25 · Flatten ·
Dense512 ReLU · Dropout .5 · Dense K (softmax; here logits, the loss applies the softmax).
Layer-to-layer training slides a window over the Keras layer list, parameter-free layers included, so each of the
first 11 layers is its own block (conv1, conv2, pool1, dropout1, conv3, conv4, pool2, dropout2, flatten, fc1,
dropout3) and the final Dense is the head. Parameters for 3x32x32 input: 896, 9248, -, -, 18496, 36928, -, -, -,
2097664, -, 5130 (K=10) -> 2,168,362 (K=10), 2,214,532 (K=100).
Choices:
* dropout rates are the notebook's (0.25, 0.25, 0.5) and plain element-wise nn.Dropout (as Keras' Dropout),
  not opts["dropout"]: they are part of the named architecture;
* MaxPool2 floors odd sizes as Keras' 'valid' pooling does; Flatten reads the map in PyTorch's C,H,W order
  instead of Keras' H,W,C (same parameter count, a fixed permutation of fc1's inputs);
* initialisation follows Keras' defaults (Glorot-uniform weights, zero biases) unless opts["keras_init"] is
  false (then PyTorch's defaults): the notebook never sets an initialiser;
* width_mult scales 32/64/512; nonlinearity/negative_slope pick the activation (ReLU in the paper); bn (default
  False, the notebook has none) adds BatchNorm2d after each conv, before the activation; other options are
  ignored. The map must survive both pools (input >= 4 px).
"""

from torch import nn

from bench.models.common import BlockNet, activation, keras_init, width

BASES = {"cnn12"}

# the Keras layers before the output Dense: (name, kind, argument)
LAYERS = [
    ("conv1", "conv", 32),
    ("conv2", "conv", 32),
    ("pool1", "pool", 2),
    ("dropout1", "dropout", 0.25),
    ("conv3", "conv", 64),
    ("conv4", "conv", 64),
    ("pool2", "pool", 2),
    ("dropout2", "dropout", 0.25),
    ("flatten", "flatten", None),
    ("fc1", "dense", 512),
    ("dropout3", "dropout", 0.5),
]


def build(base, hierarchy, in_channels, num_classes, input_size, opts) -> BlockNet:
    if hierarchy is not None:
        raise ValueError(f"cnn12 has no hierarchies (got {hierarchy})")
    mult = opts.get("width_mult", 1.0)
    blocks, channels, size, features = [], in_channels, input_size, None
    for _name, kind, arg in LAYERS:
        if kind == "conv":
            cout = width(arg, mult)
            layers = [nn.Conv2d(channels, cout, 3, padding=1)]
            if opts.get("bn", False):
                layers.append(nn.BatchNorm2d(cout))
            block, channels = nn.Sequential(*layers, activation(opts)), cout
        elif kind == "pool":
            block, size = nn.MaxPool2d(arg), size // arg
            if size < 1:
                raise ValueError(f"cnn12: a {input_size}-px input is too small for two 2x2 pools")
        elif kind == "dropout":
            block = nn.Dropout(arg)
        elif kind == "flatten":
            block, features = nn.Flatten(), channels * size * size
        else:
            hidden = width(arg, mult)
            block, features = nn.Sequential(nn.Linear(features, hidden), activation(opts)), hidden
        blocks.append(block)
    model = BlockNet(
        blocks,
        nn.Linear(features, num_classes),
        (in_channels, input_size, input_size),
        num_classes,
        block_names=[name for name, _, _ in LAYERS],
    )
    if opts.get("keras_init", True) and not opts.get("keras_defaults"):  # keras_defaults: build_model applies them
        model.apply(keras_init)
    return model
