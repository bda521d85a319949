"""The plain reference input pipeline: a torch DataLoader over the same tensors with torchvision transforms,
one sample at a time. It is what bench.data.loader.Batches must agree with (tests, `bench data benchmark`)."""

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler
from torchvision.transforms import v2


class TensorSamples(Dataset):
    """Samples of an in-memory uint8 dataset, each passed through `transform`."""

    def __init__(self, x, y, transform=None):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        sample = self.x[i]
        return (self.transform(sample) if self.transform else sample.long()), self.y[i]


class SeededShuffle(Sampler):
    """One torch.randperm per epoch from a seeded generator: the shuffle Batches uses. (torch's RandomSampler
    draws a second, empty-remainder permutation each epoch, so its later epochs would differ.)"""

    def __init__(self, n: int, seed: int):
        self.n, self.generator = n, torch.Generator().manual_seed(seed)

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


def image_transform(size: int, mean, std, augment: dict | None = None) -> v2.Compose:
    augment = augment or {}
    steps = []
    if augment.get("crop_padding"):
        steps.append(v2.RandomCrop(size, padding=augment["crop_padding"]))
    if augment.get("hflip"):
        steps.append(v2.RandomHorizontalFlip(0.5))
    return v2.Compose(steps + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def reference_loader(
    x, y, batch_size, *, mean=None, std=None, augment=None, shuffle=False, seed=0, num_workers=0
) -> DataLoader:
    """DataLoader over uint8 tensors (images N x C x H x W with torchvision transforms; text N x L as int64).
    The sampler's generator is seeded with `seed`, as Batches' is."""
    transform = None if x.ndim == 2 else image_transform(x.shape[-1], mean, std, augment)
    samples = TensorSamples(x, y, transform)
    sampler = SeededShuffle(len(samples), seed) if shuffle else SequentialSampler(samples)
    return DataLoader(
        samples,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed + 1),
    )
