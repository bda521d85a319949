"""MNIST, Fashion-MNIST, CIFAR-10/100 and Imagenette (160 px) through torchvision, in torchvision's layout.

The canonical files, mirrors and md5s are torchvision's own (read from its dataset classes, not copied here):
root/MNIST/raw, root/FashionMNIST/raw, root/cifar-10-batches-py, root/cifar-100-python, root/imagenette2-160.
Downloads go through bench.data.download (temporary name, checksum, rename), so a downloaded pickle is verified
before it is ever opened. Loading does not re-hash the files (`bench data verify` does); it checks their
structure, names the file when one is unreadable, and unpickles CIFAR batches with an unpickler that allows only
the numpy names a batch needs (a planted pickle cannot run code).
"""

import pickle
from pathlib import Path

import numpy as np
import torch
import torchvision.datasets as tvd

from bench.claims.datasets import DatasetInfo
from bench.data.download import DataError, Resource
from bench.data.tensors import TensorData

IDX = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}
PICKLED = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}
IMAGENETTE_URL, IMAGENETTE_MD5 = tvd.Imagenette._ARCHIVES["160px"]
IMAGENETTE_DIR = "imagenette2-160"


def _idx_resources(cls) -> list[Resource]:
    folder = f"{cls.__name__}/raw"
    return [
        Resource(f"{folder}/{name}", tuple(m + name for m in cls.mirrors), md5, extract_to=folder)
        for name, md5 in cls.resources
    ]


RESOURCES = {
    **{name: _idx_resources(cls) for name, cls in IDX.items()},
    **{
        name: [Resource(cls.filename, (cls.url,), cls.tgz_md5, extract_to=cls.base_folder)]
        for name, cls in PICKLED.items()
    },
    "imagenette": [Resource(Path(IMAGENETTE_URL).name, (IMAGENETTE_URL,), IMAGENETTE_MD5, extract_to=IMAGENETTE_DIR)],
}


def _idx_files(cls) -> list[str]:
    return [f"{cls.__name__}/raw/{name.removesuffix('.gz')}" for name, _ in cls.resources]


def _pickle_files(cls) -> list[str]:
    return [f"{cls.base_folder}/{name}" for name, _ in cls.train_list + cls.test_list]


def layout_problem(info: DatasetInfo, root: Path) -> str:
    if info.name == "imagenette":
        from bench.data.image_folder import layout_problem as folder_problem

        return folder_problem(root / IMAGENETTE_DIR, ("train", "val"), sorted(tvd.Imagenette._WNID_TO_CLASS))
    files = _idx_files(IDX[info.name]) if info.name in IDX else _pickle_files(PICKLED[info.name])
    missing = [f for f in files if not (root / f).is_file()]
    return f"missing {', '.join(missing)}" if missing else ""


def _read_idx(info: DatasetInfo, root: Path, train: bool):
    cls = IDX[info.name]
    try:
        split = cls(str(root), train=train, download=False)
    except (RuntimeError, ValueError, AssertionError, OSError) as err:
        files = [f for f in _idx_files(cls) if ("train" in f) == train]
        raise DataError(
            f"cannot read {info.name} files {', '.join(str(root / f) for f in files)} ({err}); they are "
            f"truncated or not MNIST idx files: delete them and run `bench data download {info.name}`"
        ) from None
    return split.data.unsqueeze(1).contiguous(), split.targets.to(torch.int64)


class BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches and nothing else: a pickle may name any callable, so only the names a batch of numpy
    arrays, lists and dicts needs are allowed; anything else (os.system, ...) is refused before it runs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: not part of a CIFAR batch")
        return super().find_class(module, name)


def _read_pickles(info: DatasetInfo, root: Path, train: bool):
    cls = PICKLED[info.name]
    images, labels = [], []
    for name, _ in cls.train_list if train else cls.test_list:
        path = root / cls.base_folder / name
        try:
            with open(path, "rb") as f:
                entry = BatchUnpickler(f, encoding="latin1").load()
            entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}  # py2 str or bytes keys
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            target = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64)
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
            raise DataError(
                f"cannot read {path} ({type(err).__name__}: {err}); it is truncated or not a CIFAR batch: "
                f"delete the folder and run `bench data download {info.name}`"
            ) from None
        if len(data) != len(target):
            raise DataError(f"{path}: {len(data)} images but {len(target)} labels")
        images.append(torch.from_numpy(data))
        labels.append(torch.from_numpy(target))
    return torch.cat(images), torch.cat(labels)


def load(info: DatasetInfo, root: Path) -> TensorData:
    if info.name == "imagenette":
        from bench.data.image_folder import load_split

        classes = sorted(tvd.Imagenette._WNID_TO_CLASS)
        train = load_split(root / IMAGENETTE_DIR / "train", classes, info.size, info.channels)
        test = load_split(root / IMAGENETTE_DIR / "val", classes, info.size, info.channels)
        return TensorData(*train, *test, info.num_classes)
    read = _read_idx if info.name in IDX else _read_pickles
    return TensorData(*read(info, root, True), *read(info, root, False), info.num_classes)
