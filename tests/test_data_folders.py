"""Image-folder datasets: trees the tests write themselves (PNG/JPEG per class, two splits), read through
bench.data.image_folder and bench.data.wbc; the cache of decoded tensors; the error cases; and the real files in
../shared/data (the Imagenette subset through the imagenette loader, the BCCD white-blood-cell stand-in)."""

import dataclasses
import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import SHARED_DATA, shared_missing
from PIL import Image

from bench import data
from bench.claims.datasets import DATASETS
from bench.data import image_folder, wbc
from bench.data.download import DataError, Resource, extract, verify
from bench.data.image_folder import cache_path, layout_problem, load_split

CLASSES = ["alpha", "beta", "gamma"]
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]  # one solid colour per class


def write_image(path: Path, colour, size=(40, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("RGB", size, colour).save(path, fmt)


def write_tree(folder: Path, splits=("train", "test"), classes=CLASSES, per_class=2):
    """folder/<split>/<class>/ with `per_class` images each, in a mix of suffixes (.png, .JPG, .jpeg)."""
    suffixes = [".png", ".JPG", ".jpeg"]
    for split in splits:
        for k, name in enumerate(classes):
            for i in range(per_class):
                write_image(folder / split / name / f"img{i}{suffixes[(i + k) % 3]}", COLOURS[k % 3])
    return folder


def linked_copy(src: Path, dst: Path) -> Path:
    """dst/<class> -> src/<class> symlinks: the shared files are read, the cache is written under dst."""
    dst.mkdir(parents=True)
    for class_dir in sorted(src.iterdir()):
        if class_dir.is_dir():
            (dst / class_dir.name).symlink_to(class_dir, target_is_directory=True)
    return dst


def forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("PIL.Image.open called: the split was decoded again")

    monkeypatch.setattr(PIL.Image, "open", fail)


# --- layout and decoding ---------------------------------------------------------------------------------------


def test_load_split_shapes_labels_and_order(tmp_path):
    root = write_tree(tmp_path / "tree", per_class=3)
    assert layout_problem(root, ("train", "test"), CLASSES) == ""
    x, y = load_split(root / "train", CLASSES, 16)
    assert x.dtype == torch.uint8 and x.shape == (9, 3, 16, 16)
    assert y.dtype == torch.int64 and y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for img, label in zip(x, y):  # each image is its class's colour (JPEG: within a few levels)
        centre = img[:, 8, 8].int()
        assert (centre - torch.tensor(COLOURS[label])).abs().max() <= 6
    gray, y1 = load_split(root / "test", CLASSES, 12, channels=1)
    assert gray.shape == (9, 1, 12, 12) and torch.equal(y1, y)


def test_resize_modes(tmp_path):
    # 48 x 24 image, the left quarter red: "shorter_center" scales to 24 x 12 and keeps the middle 12 columns
    # (no red), "square" squeezes the whole width into 12 columns (red on the left)
    img = np.zeros((24, 48, 3), dtype=np.uint8)
    img[:, :, 2] = 255
    img[:, :12] = (255, 0, 0)
    path = tmp_path / "tree" / "a" / "x.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(img).save(path)
    center, _ = load_split(tmp_path / "tree", ["a"], 12, resize="shorter_center")
    square, _ = load_split(tmp_path / "tree", ["a"], 12, resize="square")
    assert center.shape == square.shape == (1, 3, 12, 12)
    assert center[0, 0, :, 1:].max() < 60  # red channel: only blue left after the center crop
    assert square[0, 0, :, 0].min() > 200 and square[0, 2, :, -1].min() > 200
    assert not torch.equal(center, square)
    with pytest.raises(ValueError, match="resize must be one of"):
        load_split(tmp_path / "tree", ["a"], 12, resize="stretch")


def test_layout_problems_name_what_is_wrong(tmp_path):
    root = write_tree(tmp_path / "tree")
    splits = ("train", "test")
    assert layout_problem(tmp_path / "nowhere", splits, CLASSES) == f"missing folder {tmp_path / 'nowhere'}"
    shutil.rmtree(root / "test")
    assert layout_problem(root, splits, CLASSES) == f"missing split folder {root / 'test'}"
    write_tree(root, splits=("test",))
    shutil.rmtree(root / "train" / "beta")
    assert layout_problem(root, splits, CLASSES) == f"missing class folder {root / 'train' / 'beta'}"
    (root / "train" / "beta").mkdir()
    (root / "train" / "beta" / "notes.txt").write_text("not an image")
    expected = f"class folder {root / 'train' / 'beta'} holds no images (.jpg/.jpeg/.png)"
    assert layout_problem(root, splits, CLASSES) == expected
    write_image(root / "train" / "beta" / "b.png", COLOURS[1])
    (root / "test" / "delta").mkdir()
    expected = f"unexpected folder {root / 'test' / 'delta'} (not one of the 3 classes)"
    assert layout_problem(root, splits, CLASSES) == expected
    (root / "test" / "delta").rmdir()
    (root / "test" / ".hidden").mkdir()  # hidden folders and loose files (a cache) are not classes
    (root / "test" / "README.txt").write_text("x")
    assert layout_problem(root, splits, CLASSES) == ""


@pytest.mark.parametrize("case", ["missing class", "empty class", "missing split"])
def test_load_split_refuses_a_broken_tree(tmp_path, case):
    root = write_tree(tmp_path / "tree")
    if case == "missing class":
        shutil.rmtree(root / "train" / "gamma")
        expected = f"missing class folder {root / 'train' / 'gamma'}"
    elif case == "empty class":
        for p in (root / "train" / "gamma").iterdir():
            p.unlink()
        expected = f"class folder {root / 'train' / 'gamma'} holds no images"
    else:
        shutil.rmtree(root / "train")
        expected = f"missing split folder {root / 'train'}"
    with pytest.raises(DataError, match=f"image folder .*{expected}.*download the dataset again"):
        load_split(root / "train", CLASSES, 8)


@pytest.mark.parametrize("kind", ["random bytes", "truncated"])
def test_corrupt_image_names_the_file(tmp_path, kind):
    root = write_tree(tmp_path / "tree")
    bad = root / "train" / "beta" / "zz_bad.jpg"
    if kind == "random bytes":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    else:
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(bad, "JPEG")
        bad.write_bytes(bad.read_bytes()[:600])
    with pytest.raises(DataError, match=f"cannot decode image {bad}.*delete it"):
        load_split(root / "train", CLASSES, 8)
    assert not list((root / "train").glob(".bench-cache-*"))  # nothing cached from a failed decode


# --- the cache -------------------------------------------------------------------------------------------------


def test_cache_written_once_reused_and_refreshed(tmp_path, monkeypatch):
    root = write_tree(tmp_path / "tree")
    split = root / "train"
    x, y = load_split(split, CLASSES, 8)
    cache = cache_path(split, 8)
    assert cache.is_file() and [p.name for p in split.glob(".bench-cache-*")] == [cache.name]  # no .part left
    written = cache.stat().st_mtime_ns
    with monkeypatch.context() as m:
        forbid_decoding(m)
        x2, y2 = load_split(split, CLASSES, 8)  # from the cache: PIL is not called
        assert torch.equal(x, x2) and torch.equal(y, y2) and cache.stat().st_mtime_ns == written
        changed = split / "alpha" / "img0.png"
        write_image(changed, (255, 255, 0))
        os.utime(changed, ns=(written + 10**9, written + 10**9))
        with pytest.raises(AssertionError, match="decoded again"):
            load_split(split, CLASSES, 8)  # a changed file: the cache is stale, the split is decoded again
    x4, y4 = load_split(split, CLASSES, 8)
    assert torch.equal(y4, y) and x4[0, :, 4, 4].tolist() == [255, 255, 0] and torch.equal(x4[1:], x[1:])
    write_image(split / "gamma" / "img9.png", COLOURS[2])  # an added file refreshes it too
    x5, y5 = load_split(split, CLASSES, 8)
    assert len(x5) == len(x) + 1 and y5[-1] == 2
    other = load_split(split, CLASSES, 10)  # another size has its own cache
    assert other[0].shape[-1] == 10 and cache_path(split, 10).is_file() and cache_path(split, 8).is_file()


def test_corrupt_cache_is_rebuilt_and_unwritable_folder_is_not_cached(tmp_path, monkeypatch):
    root = write_tree(tmp_path / "tree")
    split = root / "train"
    x, _ = load_split(split, CLASSES, 8)
    cache_path(split, 8).write_bytes(b"not a torch file")
    assert torch.equal(load_split(split, CLASSES, 8)[0], x)
    assert torch.equal(torch.load(cache_path(split, 8), weights_only=True)["x"], x)  # rewritten
    cache_path(split, 8).unlink()

    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(image_folder.tempfile, "mkstemp", read_only)
    with pytest.warns(UserWarning, match="could not cache"):
        assert torch.equal(load_split(split, CLASSES, 8)[0], x)
    assert not list(split.glob(".bench-cache-*"))


# --- Raabin-WBC through an archive -----------------------------------------------------------------------------


def small_raabin(**changes):
    return dataclasses.replace(DATASETS["raabin_wbc"], loader="wbc", size=16, train_size=10, test_size=5, **changes)


def test_wbc_from_a_zip_archive(tmp_path, monkeypatch):
    src, root = tmp_path / "src", tmp_path / "root"
    write_tree(src, splits=("Train",), classes=wbc.CLASSES, per_class=2)
    write_tree(src, splits=("TestA",), classes=wbc.CLASSES, per_class=1)
    root.mkdir()
    archive = root / "raabin_wbc" / "release.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(src.rglob("*")):
            z.write(path, path.relative_to(src).as_posix())
    resource = Resource(
        "raabin_wbc/release.zip", (), hashlib.md5(archive.read_bytes()).hexdigest(), extract_to="raabin_wbc"
    )
    info = small_raabin()
    assert wbc.layout_problem(info, root).startswith(f"missing split folder {root / 'raabin_wbc' / 'Train'}")
    assert verify(resource, root)[0] is True
    extract(resource, root)
    assert wbc.layout_problem(info, root) == ""
    loaded = wbc.load(info, root)
    assert loaded.x_train.shape == (10, 3, 16, 16) and loaded.x_test.shape == (5, 3, 16, 16)
    assert loaded.y_train.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4] and loaded.y_test.tolist() == [0, 1, 2, 3, 4]
    assert loaded.problems(info) == []
    # the whole path through bench.data.load, with the catalog entry this test stands in for
    monkeypatch.setitem(DATASETS, "raabin_wbc", info)
    got = data.load("raabin_wbc", {"data": {"source": "real"}, "input_size": 16}, root=root)
    assert torch.equal(got.x_train, loaded.x_train) and torch.equal(got.y_test, loaded.y_test)
    # a split that does not hold the release's number of images is refused
    write_image(root / "raabin_wbc" / "TestA" / "Neutrophil" / "extra.png", COLOURS[2])
    assert "TestA holds 6 images, the release has 5" in wbc.layout_problem(info, root)
    with pytest.raises(DataError, match="TestA holds 6 images"):
        data.load("raabin_wbc", {"data": {"source": "real"}, "input_size": 16}, root=root)


def test_wbc_resources_and_unpacked_archive_hint(tmp_path):
    names = [r.filename for r in wbc.RESOURCES["raabin_wbc"]]
    assert names == ["raabin_wbc/Train.rar", "raabin_wbc/TestA.rar"]
    for r in wbc.RESOURCES["raabin_wbc"]:
        assert r.md5 == "" and r.sha256 == "" and r.extract_to == "raabin_wbc"  # nothing published to check
        assert all(u.endswith("/WBC/Cropped_double_labeled/" + Path(r.filename).name) for u in r.urls)
    (tmp_path / "raabin_wbc").mkdir()
    (tmp_path / "raabin_wbc" / "Train.rar").write_bytes(b"Rar!")
    problem = wbc.layout_problem(small_raabin(), tmp_path)
    assert problem.startswith("missing split folder") and "Train.rar present but not unpacked" in problem


# --- real files in ../shared/data ------------------------------------------------------------------------------


def shared(path: str) -> Path:
    folder = SHARED_DATA / path
    if not folder.is_dir():
        shared_missing(f"real data {folder} not found (the shared data folder is absent)")
    return folder


def test_real_imagenette_subset_through_the_imagenette_loader(tmp_path, monkeypatch):
    src = shared("imagenette/imagenette2-160")
    root = tmp_path / "root"
    for split in ("train", "val"):
        linked_copy(src / split, root / "imagenette2-160" / split)
    cfg = {"data": {"source": "real"}, "input_size": 160}
    got = data.load("imagenette", cfg, root=root)
    assert got.x_train.shape == (300, 3, 160, 160) and got.x_test.shape == (100, 3, 160, 160)
    assert torch.bincount(got.y_train).tolist() == [30] * 10 and torch.bincount(got.y_test).tolist() == [10] * 10
    assert got.x_train.float().std() > 20  # real photographs, not blank
    with monkeypatch.context() as m:  # the second load comes from the caches under root, not from PIL
        forbid_decoding(m)
        again = data.load("imagenette", cfg, root=root)
    assert torch.equal(again.x_train, got.x_train) and torch.equal(again.y_test, got.y_test)
    assert cache_path(root / "imagenette2-160" / "train", 160).is_file()


def test_real_bccd_standin_through_load_split(tmp_path):
    folder = linked_copy(shared("wbc_standin_bccd/BCCD_cropped"), tmp_path / "bccd")
    assert layout_problem(tmp_path, ("bccd",), wbc.CLASSES) == ""
    x, y = load_split(folder, wbc.CLASSES, 32)
    assert x.shape == (351, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [3, 88, 33, 20, 207]  # Basophil .. Neutrophil
    assert x.float().std() > 10
