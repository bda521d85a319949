"""Datasets as uint8 tensors: the real ones (canonical files under the data root) or synthetic stand-ins.

`load(name, cfg)` returns a `TensorData` (bench.data.tensors) at the experiment's input size: images uint8
N x C x H x W, text uint8 N x L character indices; `bench.data.loader` turns them into batches on the device.
The data root is `--data-root`, else $BENCH_DATA, else ./data. Each dataset family is one module exposing
RESOURCES (its canonical files: mirrors, checksums, archives), `layout_problem` (what is missing or wrong under
the root) and `load`. Nothing is downloaded unless asked (`bench data download`, `bench run --download`,
`--config download=true`); $BENCH_OFFLINE=1 forbids it.
"""

import dataclasses
import importlib
import os
from pathlib import Path

from bench.claims.datasets import DATASETS, DatasetInfo


def data_root(root=None) -> Path:
    return Path(root or os.environ.get("BENCH_DATA") or "data").resolve()


def family(info: DatasetInfo):
    """The module that reads a dataset's real files."""
    return importlib.import_module(f"bench.data.{info.loader}")


def missing_reason(name: str, source: str) -> str:
    """'' when `name` can be loaded (real files or stand-in), else why not. Checked for synthetic runs too, so
    that every profile runs the same experiments."""
    info = DATASETS[name]
    if not info.loader:
        return f"dataset '{name}' has no loader yet (data layer)"
    return ""


def ensure(name: str, root=None) -> Path:
    """Download (if missing) and extract every canonical file of a dataset; returns the data root."""
    from bench.data.download import extract, fetch

    info, root = DATASETS[name], data_root(root)
    for resource in family(info).RESOURCES[name]:
        fetch(resource, root)
        if resource.extract_to and family(info).layout_problem(info, root):
            extract(resource, root)
    return root


def status(name: str, root=None, check_sums: bool = False) -> dict:
    """What is present for a dataset under the root, and (check_sums) whether its files match their checksums."""
    from bench.data.download import verify

    info, root = DATASETS[name], data_root(root)
    module = family(info)
    out = {"dataset": name, "root": str(root), "problem": module.layout_problem(info, root), "files": []}
    for resource in module.RESOURCES[name]:
        path = resource.path(root)
        entry = {"file": str(path), "present": path.exists(), "verified": None, "detail": ""}
        if check_sums and path.exists():
            entry["verified"], entry["detail"] = verify(resource, root)
        out["files"].append(entry)
    return out


def counts(name: str, root=None) -> tuple[int, int]:
    """The training and test samples a present dataset holds (read as a run reads them; image folders are decoded
    once and cached)."""
    info = DATASETS[name]
    data = family(info).load(info, data_root(root))
    return len(data.y_train), len(data.y_test)


def load(name: str, cfg: dict, root=None, download: bool = False):
    """The train and test split of `name` for an experiment config (its `data` and `input_size`)."""
    from bench import BenchError
    from bench.data.download import DataError

    info = DATASETS[name]
    reason = missing_reason(name, cfg["data"]["source"])
    if reason:
        raise BenchError(reason)
    if cfg["data"]["source"] == "synthetic":
        from bench.data.synthetic import stand_in

        data = stand_in(info, cfg["data"]["train_samples"], cfg["data"]["test_samples"])
    else:
        if info.decoded:  # decoded from image files: decode at the experiment's size instead of cropping
            info = dataclasses.replace(info, size=cfg.get("input_size", info.size))
        module, root = family(info), data_root(root)
        problem = module.layout_problem(info, root)
        if problem and download:
            ensure(name, root)
            problem = module.layout_problem(info, root)
        if problem:
            raise DataError(
                f"dataset {name} not found under {root}: {problem}; run `bench data download {name}` on "
                f"a machine with internet (bench run --download, workflow --config download=true), or "
                f"point BENCH_DATA at a folder that holds it"
            )
        data = module.load(info, root)
        wanted = (cfg["data"].get("train_samples"), cfg["data"].get("test_samples"))
        found = (len(data.y_train), len(data.y_test))
        uncapped = "train_samples" in cfg["data"] and wanted == (None, None)  # a profile's config with no cap
        if uncapped and found != (info.train_size, info.test_size):
            # a profile that judges the papers trains on the whole dataset: a partial or substituted copy stops here
            raise DataError(
                f"dataset {name} under {root}: {found[0]:,} training and {found[1]:,} test samples, but "
                f"{name} has {info.train_size:,} and {info.test_size:,} (bench/claims/datasets.py): a partial "
                f"or substituted copy; download it again (bench data download {name})"
            )
        data = data.subset(*wanted)
    problems = data.problems(info)
    if problems:
        raise DataError(f"dataset {name} under {data_root(root)} does not look like {name}: {'; '.join(problems)}")
    return data.resized(cfg.get("input_size", info.size))
