"""Model zoo: every network is an ordered list of blocks plus a head (`BlockNet`).

A block is the unit that layer-wise training, freezing and dropping act on (one conv with its BN, activation,
dropout and the pool that follows it, or one residual unit); the head is everything after the last block.
Architectures are named by a base (`vgg16`, `resnet50`, ...) and, for the papers' variants, a hierarchy: the
number of convs (VGG) or residual units (ResNet) per resolution stage. Paper-specific details (activation,
dropout, head) come from the experiment's config, not from the name; `keras_defaults: true` gives any model
Keras' default initialisers and BatchNormalization settings (a paper that trained in Keras). `feat_mult` (VGG and
ResNet only) widens the convs on top of the profile's `width_mult` (bench.models.common.conv_mult).
"""
from bench.models.common import BlockNet

# family prefix of a base name -> module with BASES (the names it builds) and build(...)
FAMILIES = {
    "vgg": "bench.models.vgg",
    "resnet": "bench.models.resnet",
    "resnext": "bench.models.resnext",
    "densenet": "bench.models.densenet",
    "alexnet": "bench.models.alexnet",
    "lenet": "bench.models.lenet",
    "cnn12": "bench.models.cnn12",
    "simcnn": "bench.models.simcnn",
    "vdcnn": "bench.models.vdcnn",
}


def family(base: str) -> str:
    """The family whose prefix starts `base` (the longest such prefix)."""
    matches = [name for name in FAMILIES if base.startswith(name)]
    return max(matches, key=len) if matches else ""


def missing_reason(architecture: dict) -> str:
    """'' when the architecture can be built, else why not."""
    import importlib

    base = architecture.get("base", "")
    fam = family(base)
    if not fam or base not in importlib.import_module(FAMILIES[fam]).BASES:
        return f"model '{base}' is not in the model zoo (bench/models)"
    return ""


def build_model(architecture: dict, in_channels: int, num_classes: int, input_size: int, options: dict) -> BlockNet:
    """Build `architecture` ({base, hierarchy?}) for inputs of in_channels x input_size x input_size."""
    import importlib

    reason = missing_reason(architecture)
    if reason:
        from bench import BenchError

        raise BenchError(reason)
    module = importlib.import_module(FAMILIES[family(architecture["base"])])
    if options.get("feat_mult", 1.0) != 1.0 and not getattr(module, "FEAT_MULT", False):
        from bench import BenchError

        raise BenchError(f"feat_mult {options['feat_mult']}: {architecture['base']} does not apply it (only the "
                         "families whose module sets FEAT_MULT do: vgg, resnet)")
    model = module.build(architecture["base"], architecture.get("hierarchy"), in_channels, num_classes,
                         input_size, dict(options))
    if options.get("keras_defaults"):  # a paper that trained Keras models (bench.models.common.apply_keras_defaults)
        from bench.models.common import apply_keras_defaults

        apply_keras_defaults(model)
    return model
