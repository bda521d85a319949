"""Download, verify and extract the datasets' canonical files; nothing half-written is left as if complete.

A `Resource` is one file of a dataset's canonical distribution: its mirrors, its published checksum and, for an
archive, where it extracts to. `fetch` downloads to a temporary name in the target folder, checks the checksum,
then renames; `extract` unpacks into a temporary folder, then moves the contents into place. Every failure is a
DataError that names the file and says what to do. Offline ($BENCH_OFFLINE=1, or download not asked for),
nothing is fetched.
"""

import gzip
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError


class DataError(BenchError):
    """A dataset problem the user can fix (missing, corrupt, wrong layout); the message says how."""


@dataclass(frozen=True)
class Resource:
    filename: str  # where the file lives, relative to the data root (e.g. "cifar-10-batches-py.tar.gz")
    urls: tuple[str, ...]  # mirrors, tried in order
    md5: str = ""  # the published md5; "" when none is published
    sha256: str = ""  # the published sha256, where there is one
    extract_to: str = ""  # for archives: the folder (relative to the root) that extracting fills; "" = no archive

    def path(self, root: Path) -> Path:
        return Path(root) / self.filename


def offline() -> bool:
    return os.environ.get("BENCH_OFFLINE", "") not in ("", "0")


def checksum(path: Path, algorithm: str = "md5", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(resource: Resource, root: Path) -> tuple[bool | None, str]:
    """(True, detail) when the file matches its published checksum, (False, detail) when it does not,
    (None, detail) when it is absent or nothing is published to check it against."""
    path = resource.path(root)
    if not path.exists():
        return None, f"{path} is not there"
    for algorithm in ("md5", "sha256"):
        expected = getattr(resource, algorithm)
        if expected:
            got = checksum(path, algorithm)
            if got != expected:
                return False, f"{path}: {algorithm} {got}, expected {expected}"
            return True, f"{path}: {algorithm} ok"
    return None, f"{path}: no published checksum"


def _download(url: str, dest: Path):
    request = urllib.request.Request(url, headers={"User-Agent": "layerwise-bench"})
    with urllib.request.urlopen(request, timeout=60) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        from tqdm import tqdm

        with tqdm(
            total=total or None,
            unit="B",
            unit_scale=True,
            desc=dest.name.split(".part")[0],
            disable=not sys.stderr.isatty(),
            leave=False,
        ) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))
        if total and out.tell() != total:
            raise OSError(f"received {out.tell()} of {total} bytes")


def fetch(resource: Resource, root: Path) -> Path:
    """The resource's file under root, downloaded (to a temporary name, verified, renamed) if it is missing."""
    path = resource.path(root)
    if path.exists():
        ok, detail = verify(resource, root)
        if ok is False:
            raise DataError(
                f"checksum mismatch: {detail}; the file is corrupt or not the official one: delete it "
                f"and run `bench data download` again"
            )
        return path
    if offline():
        raise DataError(
            f"{path} is missing and downloads are off ($BENCH_OFFLINE); copy it there or download it "
            f"from {resource.urls[0]}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in resource.urls:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp)
        try:
            _download(url, tmp)
            mismatch = [
                f"{a} {checksum(tmp, a)}, expected {getattr(resource, a)}"
                for a in ("md5", "sha256")
                if getattr(resource, a) and checksum(tmp, a) != getattr(resource, a)
            ]
            if not mismatch:
                os.replace(tmp, path)
                return path
            errors.append(f"checksum mismatch for {path.name} from {url}: {mismatch[0]}")
        except OSError as err:
            errors.append(f"{url}: {err}")
        finally:
            tmp.unlink(missing_ok=True)  # gone after a rename; a failed or unverified download is removed
    if any("checksum mismatch" in e for e in errors):
        raise DataError(
            f"{'; '.join(errors)}: the download was corrupted or the server changed the file; try again "
            f"later, or fetch it by hand and put it at {path}"
        )
    raise DataError(
        f"could not download {path.name}: {'; '.join(errors)}; check the network, or copy the file to {path}"
    )


RAR_TOOLS = (
    ("bsdtar", ["-xf", "{archive}", "-C", "{out}"]),
    ("unar", ["-q", "-o", "{out}", "{archive}"]),
    ("7z", ["x", "-y", "-o{out}", "{archive}"]),
    ("unrar", ["x", "-y", "{archive}", "{out}/"]),
)


def _unrar(archive: Path, out: Path, target: Path):
    """RAR (Raabin-WBC's archives) needs an external tool; Python has no RAR reader of its own."""
    import subprocess

    for tool, args in RAR_TOOLS:
        if shutil.which(tool):
            cmd = [tool] + [a.format(archive=archive, out=out) for a in args]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise OSError(f"{tool} failed: {done.stderr.strip()[:300]}")
            return
    raise DataError(
        f"{archive} is a RAR archive and no RAR tool is installed: install bsdtar (Debian/Ubuntu: "
        f"libarchive-tools), unar or 7z, or unpack it by hand into {target}"
    )


def extract(resource: Resource, root: Path) -> Path:
    """Unpack an archive (tar, tar.gz, zip, rar, or a single .gz file) into root/extract_to, via a temporary folder."""
    archive, target = resource.path(root), Path(root) / resource.extract_to
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        try:
            if archive.suffix == ".zip":
                with zipfile.ZipFile(archive) as z:
                    z.extractall(tmp)
            elif archive.name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
                with tarfile.open(archive) as t:
                    t.extractall(tmp, filter="data")
            elif archive.suffix == ".gz":
                with gzip.open(archive) as fin, open(tmp / archive.stem, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
            elif archive.suffix == ".rar":
                _unrar(archive, tmp, target)
            else:
                raise DataError(f"{archive}: unknown archive format")
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, gzip.BadGzipFile) as err:
            raise DataError(
                f"archive {archive} is truncated or corrupt ({type(err).__name__}: {err}); delete it and "
                f"run `bench data download` again"
            ) from None
        # the archive may hold target's folder itself (cifar-10-batches-py/...) or just its files (MNIST raw/*.gz)
        inner = tmp / target.name
        source = inner if inner.is_dir() and len(list(tmp.iterdir())) == 1 else tmp
        target.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            dest = target / item.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)  # a previous, possibly partial, extraction
            os.replace(item, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
