"""The real image datasets through torchvision: MNIST, Fashion-MNIST, CIFAR-10/100, Imagenette (160 px).

Files live under the data root in torchvision's own layout (root/MNIST/raw, root/cifar-10-batches-py,
root/imagenette2-160, ...). With download=True torchvision fetches them from the canonical URLs and checks
their md5; without it a missing dataset is a BenchError that says where it was looked for.
"""
from pathlib import Path

import numpy as np
import torch

from bench import BenchError
from bench.data.catalog import DatasetInfo
from bench.data.tensors import ImageData

TORCHVISION_CLASS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10",
                     "cifar100": "CIFAR100", "imagenette": "Imagenette"}


def _missing(info: DatasetInfo, root: Path, err: Exception) -> BenchError:
    return BenchError(f"dataset {info.name} not found under {root} ({err}); rerun with --download "
                      f"(workflow: --config download=true) on a machine with internet, or point BENCH_DATA at a "
                      f"folder that holds it in torchvision's layout")


def _images(split_set, info: DatasetInfo) -> tuple[torch.Tensor, torch.Tensor]:
    if info.name == "imagenette":
        from PIL import Image
        from torchvision.transforms import functional as TF

        images, labels = [], []
        for path, label in split_set._samples:
            with Image.open(path) as img:
                img = TF.center_crop(TF.resize(img.convert("RGB"), info.size), info.size)
                images.append(torch.from_numpy(np.asarray(img)).permute(2, 0, 1))
            labels.append(label)
        return torch.stack(images), torch.tensor(labels)
    data = split_set.data
    x = torch.as_tensor(np.asarray(data))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return x.contiguous(), torch.as_tensor(np.asarray(split_set.targets), dtype=torch.int64)


def load(info: DatasetInfo, root: Path, download: bool) -> ImageData:
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION_CLASS[info.name])
    splits = []
    for train in (True, False):
        try:
            if info.name == "imagenette":
                split_set = cls(str(root), split="train" if train else "val", size="160px", download=download)
            else:
                split_set = cls(str(root), train=train, download=download)
        except (RuntimeError, FileNotFoundError) as err:
            raise _missing(info, root, err) from None
        splits.append(_images(split_set, info))
    (x_train, y_train), (x_test, y_test) = splits
    return ImageData(x_train, y_train, x_test, y_test, info.num_classes)
