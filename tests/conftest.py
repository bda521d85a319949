"""Shared fixtures: where the papers and the shared real data are, and a working directory for runs."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BENCH_SHARED", REPO.parent / "shared"))
PAPERS = SHARED / "papers"
SHARED_DATA = SHARED / "data"


def paper_text(source: str) -> str:
    """The text of a paper by its source prefix ('000'...'003'); skips (with the reason) when ../shared is absent."""
    files = sorted(PAPERS.glob(f"{source}_*.txt"))
    if not files:
        pytest.skip(f"paper {source} not found under {PAPERS} (set BENCH_SHARED to the shared folder)")
    return files[0].read_text(encoding="utf-8")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty directory with its own MLflow store, so tests never touch the repository's results."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path
