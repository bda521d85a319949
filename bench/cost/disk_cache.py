"""The plan's disk cache: what `bench plan` counted (each model's parts, shapes, PredSim's units), kept across
processes in <cache_dir()>/plan_parts-<digest of the code that counts>.json, so that the workflow's jobs and the test
processes count each model once."""

import atexit
import json
import os
import time
from functools import cache
from pathlib import Path

# the code a model's parts are measured by: the parts cache is only valid for the code that filled it
PARTS_CODE = [
    "models/*.py",
    "cost/method_costs.py",
    "cost/resources.py",
    "methods/learn_drop/*.py",
    "methods/layer_to_layer.py",
    "methods/predsim.py",
]


@cache
def _code_version() -> str:
    """The digest of the code that counts a model's parts, read once per process (every cache look-up names it)."""
    import hashlib

    digest = hashlib.sha256()
    root = Path(__file__).parent.parent
    for pattern in PARTS_CODE:
        for path in sorted(root.glob(pattern)):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cache_dir() -> Path:
    """Where `bench plan` keeps what it counted: $BENCH_CACHE, else $XDG_CACHE_HOME/layerwise-bench, else
    ~/.cache/layerwise-bench (the test suite points $BENCH_CACHE into its own temporary folder)."""
    if os.environ.get("BENCH_CACHE"):
        return Path(os.environ["BENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "layerwise-bench"


def parts_cache() -> Path:
    return cache_dir() / f"plan_parts-{_code_version()}.json"


_DISK: dict = {}  # cache file -> {"parts": what is known, "seen": the file's (mtime, size) when last read or written}
SAVE_EVERY_S = 2.0  # new parts are written at most this often while counting, and at the process's exit


def _stamp(path: Path):
    try:
        st = path.stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None


def _read_parts(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _merge_from_disk(entry: dict, path: Path):
    """Add what another process wrote to the cache file since this one last read or wrote it."""
    if _stamp(path) != entry["seen"]:
        entry["parts"].update({k: v for k, v in _read_parts(path).items() if k not in entry["parts"]})
        entry["seen"] = _stamp(path)


def _disk_cache(refresh: bool = False) -> dict:
    """The parts counted so far: the cache file read once per process, and again (merged) when `refresh` and another
    process has written it since (they count side by side: the workflow's jobs, the test processes)."""
    path = parts_cache()
    entry = _DISK.get(path)
    if entry is None:
        entry = _DISK[path] = {"parts": _read_parts(path), "seen": _stamp(path), "unsaved": 0, "saved_at": 0.0}
        atexit.register(_save_parts, path)
    elif refresh:
        _merge_from_disk(entry, path)
    return entry["parts"]


def _save_parts(path: Path, force: bool = True):
    """Write the cache file atomically with what other processes added since it was read; without `force`, only
    when SAVE_EVERY_S have passed since the last write."""
    entry = _DISK.get(path)
    if entry is None or not entry["unsaved"] or (not force and time.monotonic() - entry["saved_at"] < SAVE_EVERY_S):
        return
    _merge_from_disk(entry, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry["parts"], sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # a cache that cannot be written is counted again next time
        return
    entry.update(seen=_stamp(path), unsaved=0, saved_at=time.monotonic())


def disk_cached(key: str, compute):
    """`compute()` (a JSON value) for `key`, kept in <cache_dir()>/plan_parts-<code digest>.json across processes:
    read from it where this or another process counted it already, else computed and added."""
    found = _disk_cache()
    if key not in found:
        found = _disk_cache(refresh=True)  # counted by another process meanwhile?
    if key not in found:
        found[key] = compute()
        path = parts_cache()
        _DISK[path]["unsaved"] += 1
        _save_parts(path, force=False)
    return found[key]
