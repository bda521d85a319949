"""Datasets as uint8 tensors: the real ones (torchvision files under the data root) or synthetic stand-ins.

`load(name, cfg)` returns an `ImageData` whose images are uint8 N x C x H x W (already padded or cropped to
the experiment's input size) and labels int64; `bench.data.loader` turns them into normalized, augmented batches.
The data root is `--data-root`, else $BENCH_DATA, else ./data. Nothing is downloaded unless asked
(`download: true` in the workflow config, or `bench run --download`).
"""
import os
from pathlib import Path

from bench.data.catalog import DATASETS


def data_root(root=None) -> Path:
    return Path(root or os.environ.get("BENCH_DATA") or "data").resolve()


def missing_reason(name: str, source: str) -> str:
    """'' when `name` can be loaded from `source` ('real' or 'synthetic'), else why not."""
    info = DATASETS[name]
    if info.kind != "image":
        return f"dataset '{name}' (char-level text) has no loader yet (data layer: issue 4)"
    if not info.loader:  # checked for synthetic runs too, so that every profile runs the same experiments
        return f"dataset '{name}' has no loader for the real files yet (data layer: issue 4)"
    return ""


def load(name: str, cfg: dict, root=None, download: bool = False):
    """The train and test split of `name` for an experiment config (its `data` and `input_size`)."""
    from bench import BenchError

    reason = missing_reason(name, cfg["data"]["source"])
    if reason:
        raise BenchError(reason)
    info = DATASETS[name]
    if cfg["data"]["source"] == "synthetic":
        from bench.data.synthetic import stand_in

        data = stand_in(info, cfg["data"]["train_samples"], cfg["data"]["test_samples"])
    else:
        from bench.data import torchvision_sets

        data = torchvision_sets.load(info, data_root(root), download)
    return data.resized(cfg.get("input_size", info.size))
