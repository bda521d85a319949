"""Shared fixtures: where the papers and the shared real data are, and a working directory for runs."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BENCH_SHARED", REPO.parent / "shared"))
PAPERS = SHARED / "papers"
SHARED_DATA = SHARED / "data"


def shared_missing(message: str):
    """A test that needs ../shared without it: skipped with the reason on a user's machine, failed where
    BENCH_REQUIRE_SHARED=1 (.ci/run sets it: CI always has ../shared, so a missing file there is a real failure)."""
    if os.environ.get("BENCH_REQUIRE_SHARED") == "1":
        pytest.fail(f"{message} (BENCH_REQUIRE_SHARED=1)")
    pytest.skip(f"{message}; set BENCH_SHARED to the shared folder")


def paper_text(source: str) -> str:
    """The text of a paper by its source prefix ('000'...'003'); skips (with the reason) when ../shared is absent."""
    files = sorted(PAPERS.glob(f"{source}_*.txt"))
    if not files:
        shared_missing(f"paper {source} not found under {PAPERS}")
    return files[0].read_text(encoding="utf-8")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty directory with its own MLflow store, so tests never touch the repository's results."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def shared_raw(dataset: str, folder, pattern: str = "*-ubyte.gz", keep_gz: bool = False, also_as_train: bool = False):
    """Gunzip ../shared/data/<dataset>/<pattern> into folder (torchvision's raw/ layout); skips, saying why, when
    the shared folder is absent. also_as_train: copy test files under train names too (splits missing there)."""
    import gzip
    import shutil

    src = SHARED_DATA / dataset
    if not src.exists():
        shared_missing(f"{src} not present (the shared real-data folder)")
    folder.mkdir(parents=True, exist_ok=True)
    for gz in sorted(src.glob(pattern)):
        if keep_gz:
            shutil.copy(gz, folder / gz.name)
        with gzip.open(gz) as fin:
            content = fin.read()
        (folder / gz.name[:-3]).write_bytes(content)
        if also_as_train:
            (folder / gz.name[:-3].replace("t10k", "train")).write_bytes(content)
    return src
