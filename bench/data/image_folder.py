"""Image-folder datasets (folder/<split>/<class>/*.jpg|jpeg|png): layout checks and a cached decoder.

`layout_problem` says what is missing or unexpected in such a tree; `load_split` decodes one split into uint8
N x C x size x size images and int64 labels (the index of the class folder in `classes`, files in sorted order).
Every image is decoded once with PIL (a few threads: PIL releases the GIL while decoding), resized ("shorter_center":
shorter side to `size`, then the center square, as Imagenette's 160-px images need; "square": straight to size x
size) and the result is cached in the split folder as .bench-cache-<size>-<resize>-<mode>.pt, written to a
temporary name and renamed. The cache is keyed by the classes and every image's path, byte size and mtime, so a
changed, added or removed file means the split is decoded again. A folder that cannot be written to is simply
not cached. An unreadable image is a DataError that names the file and says what to do.
"""

import hashlib
import json
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.data.download import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RESIZE_MODES = ("shorter_center", "square")
CACHE_PREFIX = ".bench-cache-"
CACHE_VERSION = 1  # bump when the decoding changes, so that old caches are not used
MAX_LISTED = 5  # problems named in one message


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_files(class_dir: Path) -> list[Path]:
    """The image files of one class folder, sorted by name (subfolders and other files are ignored)."""
    return sorted(p for p in class_dir.iterdir() if is_image(p) and p.is_file())


def _split_problems(split_dir: Path, classes: list[str]) -> list[str]:
    if not split_dir.is_dir():
        return [f"missing split folder {split_dir}"]
    out = []
    for name in classes:
        class_dir = split_dir / name
        if not class_dir.is_dir():
            out.append(f"missing class folder {class_dir}")
        elif not any(is_image(p) for p in class_dir.iterdir()):
            out.append(f"class folder {class_dir} holds no images ({'/'.join(IMAGE_SUFFIXES)})")
    known = set(classes)
    extra = sorted(
        p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in known
    )
    out += [f"unexpected folder {split_dir / name} (not one of the {len(classes)} classes)" for name in extra]
    return out


def _message(problems: list[str]) -> str:
    more = len(problems) - MAX_LISTED
    return "; ".join(problems[:MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")


def layout_problem(folder: Path, splits: tuple[str, ...], classes: list[str]) -> str:
    """'' when folder/<split>/<class>/ exists for every split and class and holds at least one image, else one
    message naming what is missing (a split or class folder, images) or unexpected (a folder that is no class)."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"missing folder {folder}"
    return _message([p for split in splits for p in _split_problems(folder / split, classes)])


def _decode(path: Path, size: int, mode: str, resize: str) -> np.ndarray:
    """One image as a size x size (x 3) uint8 array."""
    try:
        with Image.open(path) as img:
            img = img.convert(mode)  # convert() loads the pixels: a truncated file fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(
            f"cannot decode image {path} ({type(err).__name__}: {err}); the file is corrupt or not an "
            f"image: delete it (or the whole dataset folder) and download the dataset again"
        ) from None
    w, h = img.size
    if resize == "square" or w == h:
        img = img.resize((size, size), Image.BILINEAR)
    else:
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def _listing(split_dir: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, name in enumerate(classes):
        found = image_files(split_dir / name)
        files += found
        labels += [label] * len(found)
    return files, labels


def _cache_key(split_dir: Path, classes: list[str], files: list[Path], size: int, mode: str, resize: str) -> str:
    entries = []
    for path in files:
        st = path.stat()
        entries.append([path.relative_to(split_dir).as_posix(), st.st_size, st.st_mtime_ns])
    blob = json.dumps(
        {"version": CACHE_VERSION, "size": size, "mode": mode, "resize": resize, "classes": classes, "files": entries}
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _read_cache(path: Path, key: str):
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if entry.get("key") == key:
            return entry["x"], entry["y"]
    except Exception:  # a cache from another version, or a truncated one: decode again and overwrite it
        pass
    return None


def _write_cache(path: Path, key: str, x: torch.Tensor, y: torch.Tensor):
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=CACHE_PREFIX, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            torch.save({"key": key, "x": x, "y": y}, f)
        os.replace(tmp, path)
    except OSError as err:  # a read-only folder: no cache, the split is decoded on every load
        warnings.warn(
            f"could not cache the decoded images in {path} ({err}); they will be decoded again next time", stacklevel=1
        )
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def cache_path(folder: Path, size: int, channels: int = 3, resize: str = "shorter_center") -> Path:
    return Path(folder) / f"{CACHE_PREFIX}{size}-{resize}-{'RGB' if channels == 3 else 'L'}.pt"


def load_split(
    folder: Path, classes: list[str], size: int, channels: int = 3, resize: str = "shorter_center"
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split folder (folder/<class>/<image>) as (uint8 N x channels x size x size, int64 labels): labels are
    indices in `classes`, images in class order, then file-name order. Cached in the folder (see module doc)."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, not {resize!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    folder, mode = Path(folder), "RGB" if channels == 3 else "L"
    problems = _split_problems(folder, classes)
    if problems:
        raise DataError(f"image folder {folder}: {_message(problems)}; download the dataset again or fix the folder")
    files, labels = _listing(folder, classes)
    key = _cache_key(folder, classes, files, size, mode, resize)
    target = cache_path(folder, size, channels, resize)
    cached = _read_cache(target, key)
    if cached is not None:
        return cached
    x = np.empty((len(files), channels, size, size), dtype=np.uint8)  # filled in place: no second copy

    def fill(i: int):
        image = _decode(files[i], size, mode, resize)
        x[i] = image.transpose(2, 0, 1) if channels == 3 else image

    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        list(pool.map(fill, range(len(files))))  # list() re-raises the first DataError
    finally:
        pool.shutdown(cancel_futures=True)  # after an error, the images not yet started are not decoded
    x = torch.from_numpy(x)
    y = torch.tensor(labels, dtype=torch.int64)
    _write_cache(target, key, x, y)
    return x, y
