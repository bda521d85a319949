"""LeNet-5 (LeCun et al. 1998) for 32x32 inputs, in its modern form, for Karimi et al.'s LeNet column.

conv 6@5x5 -> act -> 2x2 max-pool -> conv 16@5x5 -> act -> 2x2 max-pool -> FC 120 -> act -> FC 84 -> act -> FC K.
Karimi et al. give no details, so the classic layer sizes are kept with the now-usual substitutions (choices):
* ReLU instead of the scaled tanh, 2x2 max-pool instead of the trainable subsampling layers, a plain Linear
  output instead of the RBF units, and full C1 -> C3 connectivity instead of the original partial table;
* inputs below 32 px (Fashion-MNIST's 28x28) get zero-padding 2 in conv1 - the original paper likewise centred
  the 28x28 MNIST digits in a 32x32 field - so both 28- and 32-px inputs end in a 16x5x5 map (400 features);
  larger inputs are used unpadded and the first FC reads whatever map they leave;
* optional BatchNorm2d after each conv, before the activation, when opts["bn"] is true (default False); the FC
  layers get no BN (LeNet's FCs are blocks here, not a configurable head, so head_* options are ignored).
Options: width_mult scales 6/16/120/84; nonlinearity/negative_slope; dropout (default 0) after every hidden
activation (spatial after convs); conv_bias (default True).
Blocks: conv1, conv2 (each with its BN, activation, pool), fc1 (with the flatten), fc2; head: the output Linear.
3x32x32 input, 10 classes, no BN: 456 + 2416 + 48120 + 10164 + 850 = 62,006 parameters.
"""

from torch import nn

from bench.models.common import BlockNet, activation, dropout, width

BASES = {"lenet"}

CONVS = [6, 16]  # 5x5 convs, each followed by a 2x2 max-pool
FCS = [120, 84]  # hidden FC widths


def build(base, hierarchy, in_channels, num_classes, input_size, opts) -> BlockNet:
    if hierarchy is not None:
        raise ValueError(f"lenet has no hierarchies (got {hierarchy})")
    mult = opts.get("width_mult", 1.0)
    padding = 2 if input_size < 32 else 0
    blocks, cin, size = [], in_channels, input_size + 2 * padding
    for i, cout in enumerate(CONVS):
        cout = width(cout, mult)
        layers = [nn.Conv2d(cin, cout, 5, padding=padding if i == 0 else 0, bias=opts.get("conv_bias", True))]
        if opts.get("bn", False):
            layers.append(nn.BatchNorm2d(cout))
        layers += [activation(opts), dropout(opts, spatial=True), nn.MaxPool2d(2)]
        blocks.append(nn.Sequential(*layers))
        cin, size = cout, (size - 4) // 2
    if size < 1:
        raise ValueError(f"lenet: a {input_size}-px input is too small (needs at least 12 px)")
    features = cin * size * size
    for i, hidden in enumerate(FCS):
        hidden = width(hidden, mult)
        layers = [nn.Flatten()] if i == 0 else []
        layers += [nn.Linear(features, hidden), activation(opts), dropout(opts, spatial=False)]
        blocks.append(nn.Sequential(*layers))
        features = hidden
    return BlockNet(
        blocks,
        nn.Linear(features, num_classes),
        (in_channels, input_size, input_size),
        num_classes,
        block_names=["conv1", "conv2", "fc1", "fc2"],
    )
