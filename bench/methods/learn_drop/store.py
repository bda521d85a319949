"""The stored feature maps of Learn & Drop (bench/methods/learn_drop) and the batches read from them.

Feature store (`FeatureStore`): the maps of the whole training set at the current cut, one array per state
component, on the training device when they fit in `feature_store_max_mb`, else in a numpy memmap under a fresh
temporary directory (`feature_store_dir`, default the system temp dir; also when a device allocation within the
budget runs out of memory), deleted when the store is replaced and at the end of the run (also on errors).
Not pickle (the paper's choice): a memmap needs no (de)serialisation.
Codes (`feature_store`): 0 none, 1 device memory, 2 disk memmap; the final metric is the largest code of the run.
"""

import shutil
import tempfile
import time

import numpy as np
import torch

from bench.data.loader import Batches
from bench.methods.training import SpanTimer, sync

STORE_NONE, STORE_DEVICE, STORE_DISK = 0, 1, 2
STORE_PREFIX = "learn_drop_maps_"  # a disk store's temporary directory: <dir>/<prefix><random>


class FeatureStore:
    """The state after a cut for every training sample (row i = sample i), one array per state component: a
    device tensor when it fits in `max_mb`, else a numpy memmap in a new temporary directory (removed by close)."""

    def __init__(
        self, n: int, shapes: list[tuple], dtype: str, device, max_mb: float, directory=None, prefix: str = STORE_PREFIX
    ):
        self.device, self.n = device, n
        self.dtype = {"float32": torch.float32, "float16": torch.float16}[dtype]
        self.np_dtype = {"float32": np.float32, "float16": np.float16}[dtype]
        self.bytes = n * sum(int(np.prod(s)) for s in shapes) * np.dtype(self.np_dtype).itemsize
        self.dir = None
        if max_mb < 0:  # `reopen`: the arrays are an existing directory's
            return
        self.kind = STORE_DEVICE if self.bytes <= max_mb * 2**20 else STORE_DISK
        if self.kind == STORE_DEVICE:
            try:
                self.parts = [torch.empty((n, *s), dtype=self.dtype, device=device) for s in shapes]
            except torch.OutOfMemoryError:  # within the budget but not free now: fall back to the disk
                self.parts, self.kind = [], STORE_DISK
        if self.kind == STORE_DISK:
            self.kind = STORE_DISK
            self.dir = tempfile.mkdtemp(prefix=prefix, dir=directory)
            self.parts = [
                np.lib.format.open_memmap(f"{self.dir}/part{c}.npy", mode="w+", dtype=self.np_dtype, shape=(n, *s))
                for c, s in enumerate(shapes)
            ]

    @classmethod
    def reopen(cls, directory: str, n: int, shapes: list[tuple], dtype: str, device) -> "FeatureStore | None":
        """The complete disk store that a killed run left in `directory` (read-only), or None when it is gone or
        its arrays have other shapes or dtype."""
        store = cls(n, shapes, dtype, device, max_mb=-1)
        try:
            store.parts = [np.load(f"{directory}/part{c}.npy", mmap_mode="r") for c in range(len(shapes))]
        except (OSError, ValueError):
            return None
        if any(part.shape != (n, *s) or part.dtype != store.np_dtype for part, s in zip(store.parts, shapes)):
            return None
        store.kind, store.dir = STORE_DISK, directory
        return store

    def flush(self) -> None:
        """Write a disk store's pages to its files (before a checkpoint names them)."""
        for part in self.parts if self.kind == STORE_DISK else []:
            part.flush()

    def write(self, idx: torch.Tensor, tensors) -> None:
        if self.kind == STORE_DEVICE:
            idx = idx.to(self.device, non_blocking=True)
            for part, t in zip(self.parts, tensors):
                part[idx] = t.detach().to(self.dtype)
        else:
            rows = idx.cpu().numpy()
            for part, t in zip(self.parts, tensors):
                part[rows] = t.detach().to(self.dtype).cpu().numpy()

    def read(self, idx: torch.Tensor) -> tuple:
        """float32 tensors on the device, rows in the order of idx."""
        if self.kind == STORE_DEVICE:
            idx = idx.to(self.device, non_blocking=True)
            return tuple(part[idx].float() for part in self.parts)
        rows = idx.cpu().numpy()
        return tuple(torch.from_numpy(np.ascontiguousarray(part[rows])).to(self.device).float() for part in self.parts)

    def close(self) -> None:
        self.parts = []
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class StoredBatches:
    """(sample indices, stored maps, labels) of one epoch over a FeatureStore, shuffled with the same draw as
    Batches (one torch.randperm of the run's generator); `host_io` sums the disk reads' seconds."""

    def __init__(self, store: FeatureStore, batches: Batches):
        self.store, self.batches, self.host_io = store, batches, 0.0

    def __iter__(self):
        b = self.batches
        n = len(b.y)
        order, order_dev = b.epoch_order_moved()  # pinned under random_draws per_epoch: `idx` copies need no sync
        for start in range(0, n, b.batch_size):
            idx = order[start : start + b.batch_size]
            if self.store.kind == STORE_DISK:
                sync(b.y.device)
                t0 = time.perf_counter()
                feats = self.store.read(idx)
                self.host_io += time.perf_counter() - t0
            else:
                feats = self.store.read(order_dev[start : start + b.batch_size])
            yield idx, feats, b.y[order_dev[start : start + b.batch_size]]

    def __len__(self):
        return len(self.batches)


def timed_reads(source, store, dev_io: SpanTimer):
    """Iterate source, timing the device-store reads with `dev_io` (disk reads time themselves)."""
    if isinstance(source, StoredBatches) and source.store.kind == STORE_DEVICE:
        it = iter(source)
        while True:
            with dev_io.span():
                item = next(it, None)
            if item is None:
                return
            yield item
    else:
        yield from source
