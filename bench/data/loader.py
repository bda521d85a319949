"""Batches from in-memory uint8 images: kept on the training device, augmented and normalized per batch there.

Augmentation is the papers' usual pair, random crop with zero padding and horizontal flip, done for a whole
batch at once with the run's seeded generator; no per-sample PIL work in the loop.
"""
import torch
import torch.nn.functional as F


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
    """Iterate (images, labels) batches; a new shuffle and new augmentations each time it is iterated."""

    def __init__(self, x, y, batch_size, *, device, mean, std, augment=None, shuffle=False, seed=0):
        self.x, self.y = x.to(device), y.to(device)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment or {}
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self):
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        n = len(self.y)
        order = torch.randperm(n, generator=self.gen).to(self.x.device) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size] if order is not None else slice(start, start + self.batch_size)
            xb, yb = self.x[idx], self.y[idx]
            if self.augment.get("crop_padding") or self.augment.get("hflip"):
                xb = random_crop_flip(xb, self.augment.get("crop_padding", 0), self.augment.get("hflip", False), self.gen)
            yield (xb.float() - self.mean) / self.std, yb
