"""Model zoo: every network is an ordered list of blocks plus a head (`BlockNet`).

A block is the unit that layer-wise training, freezing and dropping act on (one conv with its BN, activation,
dropout and the pool that follows it, or one residual unit); the head is everything after the last block.
Architectures are named by a base (`vgg16`, `resnet50`, ...) and, for the papers' variants, a hierarchy: the
number of convs (VGG) or residual units (ResNet) per resolution stage. Paper-specific details (activation,
dropout, head) come from the experiment's config, not from the name; `keras_defaults: true` gives any model
Keras' default initialisers and BatchNormalization settings (a paper that trained in Keras). `feat_mult` (VGG and
ResNet only) widens the convs on top of the profile's `width_mult` (bench.models.common.conv_mult).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only where a model is built (bench.models.common)
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


# The names each family's module builds (its BASES' keys), here without importing the modules: which experiments a
# profile runs is decided from these at every start of Snakemake (the workflow's and each cluster job's) and of
# `bench experiments`, none of which need torch otherwise. tests/test_zoo.py checks them against every BASES.
NAMES = {
    "vgg": {"vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "vgg8b"},
    "resnet": {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d"},
    "resnext": {"resnext", "resnext50_32x4d"},
    "densenet": {"densenet121", "densenet_bc100", "densenet"},
    "alexnet": {"alexnet"},
    "lenet": {"lenet"},
    "cnn12": {"cnn12"},
    "simcnn": {"simcnn_k1", "simcnn_k2", "simcnn_k3"},
    "vdcnn": {"vdcnn9", "vdcnn17", "vdcnn29", "vdcnn49"},
}


def missing_reason(architecture: dict) -> str:
    """'' when the architecture can be built, else why not."""
    base = architecture.get("base", "")
    fam = family(base)
    if not fam or base not in NAMES[fam]:
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

        raise BenchError(
            f"feat_mult {options['feat_mult']}: {architecture['base']} does not apply it (only the "
            "families whose module sets FEAT_MULT do: vgg, resnet)"
        )
    model = module.build(
        architecture["base"], architecture.get("hierarchy"), in_channels, num_classes, input_size, dict(options)
    )
    if options.get("keras_defaults"):  # a paper that trained Keras models (bench.models.common.apply_keras_defaults)
        from bench.models.common import apply_keras_defaults

        apply_keras_defaults(model)
    return model
