"""The in-memory form of an image dataset: uint8 images and int64 labels for both splits."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ImageData:
    x_train: torch.Tensor  # uint8 N x C x H x W
    y_train: torch.Tensor  # int64 N
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    def resized(self, size: int) -> "ImageData":
        """Zero-pad (e.g. MNIST 28 -> 32) or center-crop every image to size x size."""
        h = self.x_train.shape[-1]
        if size == h:
            return self
        return ImageData(_fit(self.x_train, size), self.y_train, _fit(self.x_test, size), self.y_test, self.num_classes)


def _fit(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if size > h:
        top, left = (size - h) // 2, (size - w) // 2
        return F.pad(x, (left, size - w - left, top, size - h - top))
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size].contiguous()
