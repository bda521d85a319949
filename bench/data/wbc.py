"""Raabin-WBC (Kouzehkanan et al., Sci. Rep. 12:1123, 2022): the cropped, double-labelled white-blood-cell images.

Release: raabindata.com ("free data", section "Double-labeled cropped cells"), served from
dl.raabindata.com/WBC/Cropped_double_labeled/ as Train.rar (10,175 images), TestA.rar (4,339) and TestB.zip
(a second test set taken under other imaging conditions; not used). Train + TestA is the split of Karimi et
al.'s Table 2 (10,175 / 4,339).
Each archive holds one folder named after the split with one folder per class; the suite keeps the release's
names, under the data root:

    root/raabin_wbc/Train/{Basophil,Eosinophil,Lymphocyte,Monocyte,Neutrophil}/*.jpg
    root/raabin_wbc/TestA/{same five folders}/*.jpg

The images are 575 x 575 px JPEGs. No checksum is published for the archives, so the Resources carry none
(`bench data verify` then reports "no published checksum"); instead the layout check counts the images of each
split against the release's totals (the catalog's train_size/test_size), which catches a partial extraction.
The archives are RAR: bench.data.download.extract does not unpack RAR, so until it does, unpack them by hand
(`unar`, `bsdtar -xf` or `7z x`) into root/raabin_wbc/.

Decode size: 32 x 32 (catalog size). Karimi et al. do not state the input size. They train the same four
networks, VGG16, VGG19, AlexNet and LeNet, on CIFAR-10/100, Fashion-MNIST and Raabin-WBC and describe each
once, and the suite builds them for 32-px inputs (the CIFAR VGG head is one Linear layer on the flattened last
map, 512 features at 32 px; AlexNet's "small" preset and LeNet are 32-px networks; Fashion-MNIST is padded to 32
for the same reason). At 32 px every network is the same network, with the same parameter count and FLOPs, on
every image dataset, so the per-dataset accuracies and times of Tables 3-5 compare like with like; at 224 px the
flattened heads would grow 49-fold (VGG: 25,088 features; AlexNet small: a 200,704 x 4096 layer) and the
networks would no longer be the ones run on CIFAR. The cost: at 32 px a cell keeps its coarse shape and colour
but loses fine detail (granules, chromatin). A larger size is one catalog change (the cache is per size).
The image is resized whole (shorter side, then center crop: the crops are square, so nothing is cut).
"""

from pathlib import Path

from bench.claims.datasets import DatasetInfo
from bench.data.download import Resource
from bench.data.image_folder import image_files, load_split
from bench.data.image_folder import layout_problem as folder_problem
from bench.data.tensors import TensorData

FOLDER = "raabin_wbc"
TRAIN, TEST = "Train", "TestA"  # the release's own folder names
CLASSES = ["Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]
BASE = "dl.raabindata.com/WBC/Cropped_double_labeled"


def _archive(name: str) -> Resource:
    # md5 left empty: Raabin publishes no checksum for its archives (nothing to verify against)
    return Resource(f"{FOLDER}/{name}", (f"https://{BASE}/{name}", f"http://{BASE}/{name}"), extract_to=FOLDER)


RESOURCES = {"raabin_wbc": [_archive("Train.rar"), _archive("TestA.rar")]}


def _count(split_dir: Path) -> int:
    return sum(len(image_files(split_dir / name)) for name in CLASSES)


def layout_problem(info: DatasetInfo, root: Path) -> str:
    folder = Path(root) / FOLDER
    problem = folder_problem(folder, (TRAIN, TEST), CLASSES)
    if problem:
        packed = [r.path(root) for r in RESOURCES[info.name] if r.path(root).exists()]
        if packed:
            problem += (
                f" ({', '.join(p.name for p in packed)} present but not unpacked: unpack with unar, "
                f"`bsdtar -xf` or `7z x` into {folder})"
            )
        return problem
    for split, expected in ((TRAIN, info.train_size), (TEST, info.test_size)):
        found = _count(folder / split)
        if found != expected:
            return (
                f"{folder / split} holds {found} images, the release has {expected}: the extraction is "
                f"incomplete or the folder was changed; delete it and unpack {split}.rar again"
            )
    return ""


def load(info: DatasetInfo, root: Path) -> TensorData:
    folder = Path(root) / FOLDER
    train = load_split(folder / TRAIN, CLASSES, info.size, info.channels)
    test = load_split(folder / TEST, CLASSES, info.size, info.channels)
    return TensorData(*train, *test, info.num_classes)
