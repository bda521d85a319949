"""Synthetic stand-ins for the smoke profile: each dataset's real shape, dtype and class count, and learnable.

Every class has a smooth random prototype (low-resolution noise upsampled to the image size); a sample is its
class prototype at a random contrast plus pixel noise, stored as uint8 like the real images. Prototypes are
mirror-symmetric, so the papers' horizontal flips do not change a sample's class. A CNN separates the classes
within a few dozen steps, so a smoke run shows whether a method learns.
"""

import zlib

import torch
import torch.nn.functional as F

from bench.claims.datasets import DatasetInfo
from bench.data.tensors import TensorData


def _split(info: DatasetInfo, protos: torch.Tensor, n: int, gen: torch.Generator):
    labels = torch.arange(n) % info.num_classes
    labels = labels[torch.randperm(n, generator=gen)]
    contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=gen)
    noise = torch.randn(n, *info.shape, generator=gen)
    images = 128 + 60 * contrast * protos[labels] + 30 * noise
    return images.clamp(0, 255).to(torch.uint8), labels


def stand_in(info: DatasetInfo, train_samples: int, test_samples: int) -> TensorData:
    """The same stand-in every time for a dataset (seeded by its name), whatever the experiment seed.
    Text datasets get bench.data.text's stand-in (class keywords in random text)."""
    if info.kind == "text":
        from bench.data.text import stand_in as text_stand_in

        return text_stand_in(info, train_samples, test_samples)
    gen = torch.Generator().manual_seed(zlib.crc32(info.name.encode()))
    coarse = torch.randn(info.num_classes, info.channels, 4, 4, generator=gen)
    protos = F.interpolate(coarse, size=(info.size, info.size), mode="bilinear", align_corners=False)
    protos = protos + protos.flip(-1)  # mirror-symmetric: the papers' horizontal flips keep a sample's class
    protos = protos / protos.flatten(1).std(dim=1).view(-1, 1, 1, 1)
    x_train, y_train = _split(info, protos, train_samples, gen)
    x_test, y_test = _split(info, protos, test_samples, gen)
    return TensorData(x_train, y_train, x_test, y_test, info.num_classes)
