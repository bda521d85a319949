"""Model zoo: every network is an ordered list of blocks plus a head (`BlockNet`).

A block is the unit that layer-wise training, freezing and dropping act on (one conv with its BN, activation,
dropout and the pool that follows it, or one residual unit); the head is everything after the last block.
Architectures are named by a base (`vgg16`, `resnet50`, ...) and, for the papers' variants, a hierarchy: the
number of convs (VGG) or residual units (ResNet) per resolution stage. Paper-specific details (activation,
dropout, head) come from the experiment's config, not from the name.
"""
from bench.models.common import BlockNet

FAMILIES = {"vgg": "bench.models.vgg", "resnet": "bench.models.resnet"}
NOT_BUILT = ("alexnet", "lenet", "simcnn", "vdcnn", "cnn12", "densenet", "resnext")


def family(base: str) -> str:
    for name in FAMILIES:
        if base.startswith(name):
            return name
    return ""


def missing_reason(architecture: dict) -> str:
    """'' when the architecture can be built, else why not."""
    base = architecture.get("base", "")
    fam = family(base)
    if not fam:
        return f"model '{base}' is not built yet (model zoo: issue 3)"
    import importlib

    module = importlib.import_module(FAMILIES[fam])
    if base not in module.BASES:
        return f"model '{base}' is not built yet (model zoo: issue 3)"
    return ""


def build_model(architecture: dict, in_channels: int, num_classes: int, input_size: int, options: dict) -> BlockNet:
    """Build `architecture` ({base, hierarchy?}) for inputs of in_channels x input_size x input_size."""
    import importlib

    reason = missing_reason(architecture)
    if reason:
        from bench import BenchError

        raise BenchError(reason)
    module = importlib.import_module(FAMILIES[family(architecture["base"])])
    return module.build(architecture["base"], architecture.get("hierarchy"), in_channels, num_classes,
                        input_size, dict(options))
