"""Batches from in-memory uint8 data, kept on the training device and converted there per batch.

Images: the papers' usual augmentation, random crop with zero padding and horizontal flip, done for a whole batch
at once with the run's seeded generator, then scaling to [0, 1] and normalization, in the same operations as
torchvision's ToDtype(scale=True) + Normalize, so that without augmentation the batches equal those of the
reference DataLoader (bench.data.reference) bit for bit. Text: character indices as int64, nothing else.
No per-sample Python or PIL work in the loop.
"""
import torch
import torch.nn.functional as F


def augments(augment: dict | None) -> bool:
    """Whether an `augment` config changes the images (random crops or flips): then a sample's input differs from
    epoch to epoch, and features computed from it cannot be cached."""
    return bool(augment and (augment.get("crop_padding") or augment.get("hflip")))


def random_crop_flip(x: torch.Tensor, padding: int, hflip: bool, gen: torch.Generator) -> torch.Tensor:
    b, _, h, w = x.shape
    if padding:
        padded = F.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if hflip:
        flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


class Batches:
    """Iterate (inputs, labels) batches; a new shuffle and new augmentations each time it is iterated.

    The shuffle is torch.randperm(n) from a generator seeded with `seed`, drawn first in every epoch, so that a
    DataLoader whose RandomSampler has a generator with the same seed visits the samples in the same order.
    """

    def __init__(self, x, y, batch_size, *, device, mean=None, std=None, augment=None, shuffle=False, seed=0):
        self.x, self.y = x.to(device), y.to(device)
        self.text = x.ndim == 2
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment or {}
        if not self.text:
            self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self):
        return -(-len(self.y) // self.batch_size)

    def epoch_order(self) -> torch.Tensor | None:
        """This epoch's sample order on the CPU (one torch.randperm of the run's generator, drawn first in every
        epoch), or None when not shuffling. Code that gathers per-sample tensors of its own (cached or stored
        features) calls it so as to visit the samples in the order these batches would."""
        return torch.randperm(len(self.y), generator=self.gen) if self.shuffle else None

    def indexed(self):
        """(sample indices on the CPU, inputs, labels) batch by batch for one epoch."""
        n = len(self.y)
        order = self.epoch_order()
        order_dev = order.to(self.x.device) if order is not None else None
        for start in range(0, n, self.batch_size):
            end = min(n, start + self.batch_size)
            if order is not None:
                cpu_idx, idx = order[start:end], order_dev[start:end]
            else:
                cpu_idx, idx = torch.arange(start, end), slice(start, end)
            xb, yb = self.x[idx], self.y[idx]
            if self.text:
                yield cpu_idx, xb.long(), yb
                continue
            if augments(self.augment):
                xb = random_crop_flip(xb, self.augment.get("crop_padding", 0), self.augment.get("hflip", False), self.gen)
            yield cpu_idx, xb.float().mul_(1.0 / 255).sub_(self.mean).div_(self.std), yb

    def __iter__(self):
        for _, xb, yb in self.indexed():
            yield xb, yb
