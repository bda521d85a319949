"""The dataset catalog: what each dataset the papers name is (shape, classes, split sizes, normalization).
Torch-free, so that the registry checks its rows against it and every later stage reads it.

Split sizes are the canonical ones (torchvision / the dataset's own release); mean and std are the usual
per-channel training-set statistics and are only defaults: a paper's grid may set its own (Ma et al. use
the values of the N&E code).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str  # "image" or "text"
    channels: int  # image channels (text: 1)
    size: int  # image side in pixels (square), or text length in characters
    num_classes: int
    train_size: int
    test_size: int
    mean: tuple = ()
    std: tuple = ()
    loader: str = ""  # module in bench.data that loads the real files; "" = not implemented yet
    decoded: bool = False  # images decoded from files of their own sizes: loadable at any size (else fixed)

    @property
    def shape(self) -> tuple:
        return (self.channels, self.size, self.size) if self.kind == "image" else (self.size,)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

DATASETS = {
    d.name: d
    for d in [
        DatasetInfo("mnist", "image", 1, 28, 10, 60000, 10000, (0.1307,), (0.3081,), "torchvision_sets"),
        DatasetInfo("fashion_mnist", "image", 1, 28, 10, 60000, 10000, (0.2860,), (0.3530,), "torchvision_sets"),
        DatasetInfo(
            "cifar10",
            "image",
            3,
            32,
            10,
            50000,
            10000,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            "torchvision_sets",
        ),
        DatasetInfo(
            "cifar100",
            "image",
            3,
            32,
            100,
            50000,
            10000,
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            "torchvision_sets",
        ),
        # imagenette2-160: images whose shorter side is 160 px; the suite center-crops them to 160x160.
        DatasetInfo(
            "imagenette", "image", 3, 160, 10, 9469, 3925, IMAGENET_MEAN, IMAGENET_STD, "torchvision_sets", decoded=True
        ),
        # Raabin-WBC (575-px crops): decoded at 32 px so that Karimi's networks are the CIFAR ones (bench/data/wbc.py)
        DatasetInfo("raabin_wbc", "image", 3, 32, 5, 10175, 4339, IMAGENET_MEAN, IMAGENET_STD, "wbc", decoded=True),
        # char-level text: VD-CNN reads 1024 characters (Conneau et al.; docs/methods/si-forward.md#36-vd-cnn)
        DatasetInfo("ag_news", "text", 1, 1024, 4, 120000, 7600, loader="text"),
        DatasetInfo("dbpedia", "text", 1, 1024, 14, 560000, 70000, loader="text"),
    ]
}
