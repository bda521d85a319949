"""The in-memory form of a dataset: both splits as uint8 tensors plus int64 labels.

Images are N x C x H x W; text is N x L character indices (0 = padding, 1 = unknown, 2.. = the alphabet:
bench.data.text). uint8 keeps a whole dataset small enough to live on the training device; batches are
converted (and normalized, augmented) there (bench.data.loader).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.claims.datasets import DatasetInfo


@dataclass
class TensorData:
    x_train: torch.Tensor  # uint8, N x C x H x W (image) or N x L (text)
    y_train: torch.Tensor  # int64, N, in 0..num_classes-1
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    kind: str = "image"

    def resized(self, size: int) -> "TensorData":
        """Images: zero-pad (e.g. MNIST 28 -> 32) or center-crop to size x size. Text: truncate or pad to size."""
        fit = _fit_text if self.kind == "text" else _fit_image
        if self.x_train.shape[-1] == size:
            return self
        return TensorData(
            fit(self.x_train, size), self.y_train, fit(self.x_test, size), self.y_test, self.num_classes, self.kind
        )

    def subset(self, train: int | None, test: int | None, seed: int = 0) -> "TensorData":
        """A fixed random subset of each split (the same for every run and method: seed 0), for profiles that cap
        the sample counts on real data; None or a count >= the split's size keeps the split whole."""
        gen = torch.Generator().manual_seed(seed)

        def pick(x, y, n):
            if not n or n >= len(y):
                return x, y
            idx = torch.randperm(len(y), generator=gen)[:n].sort().values
            return x[idx], y[idx]

        x_train, y_train = pick(self.x_train, self.y_train, train)
        x_test, y_test = pick(self.x_test, self.y_test, test)
        return TensorData(x_train, y_train, x_test, y_test, self.num_classes, self.kind)

    def summary(self) -> dict:
        """What a run trained and tested on: the sample counts and a SHA-256 of both splits' bytes (images or
        characters, and labels, as trained: after the profile's subset and the resize), recorded in the result
        file and as MLflow tags."""
        import hashlib

        digest = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(t.contiguous().numpy().tobytes())
        return {"train_samples": len(self.y_train), "test_samples": len(self.y_test), "sha256": digest.hexdigest()}

    def problems(self, info: DatasetInfo) -> list[str]:
        """What does not match the catalog's description of the dataset (empty when everything does)."""
        out = []
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != torch.uint8 or y.dtype != torch.int64:
                out.append(f"{split}: dtypes {x.dtype}/{y.dtype}, expected uint8/int64")
            if x.shape[1:] != info.shape:
                out.append(f"{split}: sample shape {tuple(x.shape[1:])}, expected {info.shape}")
            if len(x) != len(y):
                out.append(f"{split}: {len(x)} samples but {len(y)} labels")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
                out.append(f"{split}: labels outside 0..{info.num_classes - 1}")
        if self.num_classes != info.num_classes or self.kind != info.kind:
            out.append(f"{self.num_classes} classes of kind {self.kind}, expected {info.num_classes} {info.kind}")
        return out


def _fit_image(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if size > h:
        top, left = (size - h) // 2, (size - w) // 2
        return F.pad(x, (left, size - w - left, top, size - h - top))
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size].contiguous()


def _fit_text(x: torch.Tensor, size: int) -> torch.Tensor:
    return x[:, :size].contiguous() if x.shape[1] >= size else F.pad(x, (0, size - x.shape[1]))
