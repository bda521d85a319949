"""Download, verify, extract and load in the canonical formats: files the tests write themselves (served through
file:// URLs), and the real files in ../shared/data. Every error case leaves nothing half-written behind."""

import gzip
import hashlib
import io
import pickle
import re
import shutil
import struct
import tarfile
import zipfile

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, shared_missing, shared_raw

from bench import data
from bench.claims.datasets import DATASETS
from bench.data import torchvision_sets as tvs
from bench.data.download import DataError, Resource, extract, fetch, verify

REAL = {"data": {"source": "real"}, "input_size": 32}


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def leftovers(folder):
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") and (".part" in p.name or "extract" in p.name)]


def test_fetch_downloads_verifies_and_renames(tmp_path):
    server, root = tmp_path / "server", tmp_path / "root"
    server.mkdir()
    (server / "file.bin").write_bytes(b"x" * 5000)
    res = Resource("sub/file.bin", (f"file://{server}/file.bin",), md5(server / "file.bin"))
    path = fetch(res, root)
    assert path == root / "sub/file.bin" and path.read_bytes() == b"x" * 5000
    assert verify(res, root)[0] is True and not leftovers(root)
    assert fetch(res, root) == path  # present and verified: not fetched again


def test_checksum_mismatch_leaves_nothing(tmp_path):
    server, root = tmp_path / "server", tmp_path / "root"
    server.mkdir()
    (server / "file.bin").write_bytes(b"y" * 100)
    res = Resource("file.bin", (f"file://{server}/file.bin",), "0" * 32)
    with pytest.raises(DataError, match=r"checksum mismatch for file.bin .* expected 0{32}"):
        fetch(res, root)
    assert not (root / "file.bin").exists() and not leftovers(root)
    (root / "file.bin").write_bytes(b"corrupt")  # a corrupt file already in place is refused, not used
    with pytest.raises(DataError, match=r"checksum mismatch: .*file.bin.*delete it"):
        fetch(res, root)


def test_unreachable_and_offline(tmp_path, monkeypatch):
    res = Resource("a.bin", (f"file://{tmp_path}/missing-1", f"file://{tmp_path}/missing-2"), "")
    with pytest.raises(DataError, match=r"could not download a.bin: .*missing-1.*missing-2"):
        fetch(res, tmp_path / "root")
    assert not leftovers(tmp_path)
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    with pytest.raises(DataError, match=r"downloads are off"):
        fetch(res, tmp_path / "root")


def write_tree(folder):
    (folder / "pack").mkdir(parents=True)
    (folder / "pack" / "a.txt").write_text("a")
    (folder / "pack" / "b.txt").write_text("b")


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_extract_archives(tmp_path, kind):
    src, root = tmp_path / "src", tmp_path / "root"
    write_tree(src)
    root.mkdir()
    archive = root / f"pack.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            for f in (src / "pack").iterdir():
                z.write(f, f"pack/{f.name}")
    else:
        with tarfile.open(archive, "w:gz") as t:
            t.add(src / "pack", "pack")
    out = extract(Resource(archive.name, ("unused",), extract_to="pack"), root)
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"] and not leftovers(root)


def test_truncated_archive_is_refused_and_leaves_nothing(tmp_path):
    src, root = tmp_path / "src", tmp_path / "root"
    write_tree(src)
    (src / "pack" / "big.bin").write_bytes(np.random.default_rng(0).bytes(200_000))
    root.mkdir()
    archive = root / "pack.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(src / "pack", "pack")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"archive .*pack.tar.gz is truncated or corrupt.*delete it"):
        extract(Resource(archive.name, ("unused",), extract_to="pack"), root)
    assert not (root / "pack").exists() and not leftovers(root)


def idx_bytes(array: np.ndarray) -> bytes:
    """The MNIST idx format: magic (0, 0, 0x08 = uint8, ndim), big-endian dimensions, then the bytes."""
    return struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_mnist_idx_files_through_download_and_loader(tmp_path, monkeypatch):
    """idx .gz files written here, served through file:// with their md5s, fetched, extracted and loaded."""
    rng = np.random.default_rng(0)
    server, root = tmp_path / "server", tmp_path / "root"
    server.mkdir()
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 60, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 20, dtype=np.uint8),
    }
    resources = []
    for name, array in arrays.items():
        (server / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        resources.append(
            Resource(
                f"MNIST/raw/{name}.gz",
                (f"file://{server}/{name}.gz",),
                md5(server / f"{name}.gz"),
                extract_to="MNIST/raw",
            )
        )
    monkeypatch.setitem(tvs.RESOURCES, "mnist", resources)
    with pytest.raises(DataError, match=r"dataset mnist not found under .*bench data download mnist"):
        data.load("mnist", REAL, root=root)
    loaded = data.load("mnist", REAL, root=root, download=True)
    assert loaded.x_train.shape == (60, 1, 32, 32) and loaded.x_test.shape == (20, 1, 32, 32)
    assert torch.equal(loaded.x_train[:, 0, 2:30, 2:30], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert loaded.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert all(f["verified"] for f in data.status("mnist", root, check_sums=True)["files"])


def test_truncated_idx_file_names_the_file(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        shape = (5, 28, 28) if "images" in name else (5,)
        (raw / name).write_bytes(idx_bytes(np.zeros(shape, dtype=np.uint8)))
    (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((5, 28, 28), np.uint8))[:300])
    with pytest.raises(DataError, match=r"cannot read mnist files .*train-images-idx3-ubyte"):
        data.load("mnist", REAL, root=tmp_path)


def cifar_batch(images: np.ndarray, labels, key="labels") -> bytes:
    """A CIFAR python pickle batch as the official files hold it: rows R..G..B (3072 bytes), a label list."""
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    return pickle.dumps(
        {b"batch_label": b"testing", key.encode(): list(labels), b"data": rows, b"filenames": [b"x.png"] * len(labels)}
    )


def real_cifar10_subset():
    from PIL import Image

    src = SHARED_DATA / "cifar10" / "convnetjs"
    if not src.exists():
        shared_missing(f"{src} not present (the shared real-data folder)")
    labels = [int(v) for v in re.findall(r"\d+", (src / "cifar10_labels.js").read_text())]
    train = np.concatenate(
        [np.asarray(Image.open(src / f"cifar10_batch_{k}.png")).reshape(1000, 32, 32, 3) for k in range(4)]
    )
    test = np.asarray(Image.open(src / "cifar10_batch_50.png")).reshape(1000, 32, 32, 3)
    return train, labels[:4000], test, labels[50000:51000]


def test_real_cifar10_subset_in_the_pickle_format(tmp_path):
    """The real CIFAR-10 pixels of ../shared/data, written as official-format pickle batches, through the loader."""
    from PIL import Image

    train, train_labels, test, test_labels = real_cifar10_subset()
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for k in range(5):
        part = slice(800 * k, 800 * (k + 1))
        (folder / f"data_batch_{k + 1}").write_bytes(cifar_batch(train[part], train_labels[part]))
    (folder / "test_batch").write_bytes(cifar_batch(test, test_labels))
    loaded = data.load("cifar10", REAL, root=tmp_path)
    assert loaded.x_train.shape == (4000, 3, 32, 32) and loaded.x_test.shape == (1000, 3, 32, 32)
    assert loaded.y_train.tolist() == train_labels and loaded.y_test.tolist() == test_labels
    first = SHARED_DATA / "cifar10" / "foolbox"
    png = next(first.glob("cifar10_00_*.png"))  # test image 0, its label in the name
    assert torch.equal(loaded.x_test[0], torch.from_numpy(np.array(Image.open(png).convert("RGB"))).permute(2, 0, 1))
    assert int(png.stem.split("_")[-1]) == loaded.y_test[0]
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"cannot read .*data_batch_3"):
        data.load("cifar10", REAL, root=tmp_path)


class _Planted:
    """A pickle that runs a command when loaded (what a hostile file in the data folder could hold)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = np.zeros((2, 32, 32, 3), np.uint8)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(cifar_batch(images, [0, 1]))
    marker = tmp_path / "pwned"
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": _Planted(marker), b"labels": [0]}))
    with pytest.raises(DataError, match=r"data_batch_2 .*refusing to unpickle posix.system"):
        data.load("cifar10", REAL, root=tmp_path)
    assert not marker.exists()  # the command never ran


def test_real_cifar100_pickles_from_the_shared_data(tmp_path):
    src = SHARED_DATA / "cifar100" / "hf_dummy" / "cifar-100-python"
    if not src.exists():
        shared_missing(f"{src} not present (the shared real-data folder)")
    shutil.copytree(src, tmp_path / "cifar-100-python")
    loaded = data.load("cifar100", REAL, root=tmp_path)
    assert loaded.x_train.shape == (5, 3, 32, 32) and loaded.y_test.tolist() == [49, 33, 72, 51, 71]
    assert loaded.y_train.tolist() == [19, 29, 0, 11, 1]


def test_real_fashion_mnist_test_split(tmp_path):
    # the train images are not in the shared folder: the test split stands in for them
    src = shared_raw("fashion_mnist", tmp_path / "FashionMNIST" / "raw", "t10k-*.gz", also_as_train=True)
    loaded = data.load("fashion_mnist", REAL, root=tmp_path)
    assert loaded.x_test.shape == (10000, 1, 32, 32)
    assert loaded.y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]  # the official first test labels
    resources = tvs.RESOURCES["fashion_mnist"]
    official = {r.filename.split("/")[-1]: r.md5 for r in resources}
    for gz in src.glob("t10k-*.gz"):
        assert md5(gz) == official[gz.name]  # the shared files are the official ones


def test_data_verify_flags_a_recompressed_file(tmp_path):
    """../shared/data's MNIST train images are the official content re-gzipped: `bench data verify` says so."""
    from bench.cli import main

    shared_raw("mnist", tmp_path / "MNIST" / "raw", keep_gz=True)
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        code = main(["data", "verify", "mnist", "--data-root", str(tmp_path)])
    text = out.getvalue()
    assert code == 2 and "mnist: ready" in text
    assert re.search(r"train-images-idx3-ubyte.gz: present, CHECKSUM MISMATCH", text)
    assert re.search(r"t10k-images-idx3-ubyte.gz: present, verified", text)
    assert DATASETS["mnist"].train_size == 60000


def test_rar_archives_need_a_tool(tmp_path, monkeypatch):
    """Raabin-WBC ships RAR archives: extracted with bsdtar/unar/7z/unrar when one is installed, else a clear error."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "Train.rar").write_bytes(b"Rar!\x1a\x07\x00 pretend")
    res = Resource("Train.rar", ("unused",), extract_to="raabin_wbc")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(DataError, match=r"Train.rar is a RAR archive and no RAR tool is installed: install bsdtar"):
        extract(res, root)
    bin_dir = tmp_path / "bin"  # a stand-in bsdtar that unpacks one file the way the real archive is laid out
    bin_dir.mkdir()
    (bin_dir / "bsdtar").write_text(
        '#!/bin/sh\n/bin/mkdir -p "$4/Train/Basophil" && echo x > "$4/Train/Basophil/a.jpg"\n'
    )
    (bin_dir / "bsdtar").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    out = extract(res, root)
    assert (out / "Train" / "Basophil" / "a.jpg").exists() and not leftovers(root)


def test_decoded_image_sets_load_at_the_experiment_size(tmp_path):
    src = SHARED_DATA / "imagenette" / "imagenette2-160"
    if not src.exists():
        shared_missing(f"{src} not present (the shared real-data folder)")
    (tmp_path / "imagenette2-160").mkdir()
    for split in ("train", "val"):
        (tmp_path / "imagenette2-160" / split).mkdir()
        for cls in (src / split).iterdir():
            (tmp_path / "imagenette2-160" / split / cls.name).symlink_to(cls)
    loaded = data.load("imagenette", {"data": {"source": "real"}, "input_size": 64}, root=tmp_path)
    assert loaded.x_train.shape == (300, 3, 64, 64) and loaded.x_test.shape == (
        100,
        3,
        64,
        64,
    )  # resampled, not cropped


def test_a_partial_copy_stops_a_run_that_judges_the_papers(tmp_path):
    """A canonical-format MNIST with 60 training images is refused under a profile without a sample cap (paper,
    scaled), naming the folder and the counts; a capped profile (check) takes its subset and records it."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, n in (
        ("train-images-idx3-ubyte", 60),
        ("train-labels-idx1-ubyte", 60),
        ("t10k-images-idx3-ubyte", 20),
        ("t10k-labels-idx1-ubyte", 20),
    ):
        shape = (n, 28, 28) if "images" in name else (n,)
        (raw / name).write_bytes(idx_bytes(np.zeros(shape, dtype=np.uint8)))
    uncapped = {"data": {"source": "real", "train_samples": None, "test_samples": None}, "input_size": 32}
    with pytest.raises(
        DataError,
        match=rf"dataset mnist under {tmp_path}: 60 training and 20 test samples, but "
        r"mnist has 60,000 and 10,000 .*partial or substituted copy",
    ):
        data.load("mnist", uncapped, root=tmp_path)
    capped = data.load(
        "mnist", {"data": {"source": "real", "train_samples": 50, "test_samples": 10}, "input_size": 32}, root=tmp_path
    )
    summary = capped.summary()
    assert summary["train_samples"] == 50 and summary["test_samples"] == 10 and len(summary["sha256"]) == 64
    assert capped.summary() == summary
    # bench data status counts what it finds and fails on the partial copy, naming the catalog's sizes
    import subprocess
    import sys

    status = subprocess.run(
        [sys.executable, "-m", "bench", "data", "status", "mnist", "--data-root", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 2 and "Traceback" not in status.stderr and "other sample counts" in status.stderr
    assert "mnist: ready, 60 training / 20 test samples, NOT the 60,000 / 10,000 of mnist" in status.stdout
