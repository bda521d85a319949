"""Batches from in-memory uint8 data, kept on the training device and converted there per batch.

Images: the papers' usual augmentation, random crop with zero padding and horizontal flip, done for a whole batch
at once with the run's seeded generator, then scaling to [0, 1] and normalization, in the same operations as
torchvision's ToDtype(scale=True) + Normalize, so that without augmentation the batches equal those of the
reference DataLoader (bench.data.reference) bit for bit. Text: character indices as int64, nothing else.
No per-sample Python or PIL work in the loop.

Class-sampled batches (`Batches.classes_per_batch`, see `class_sampled_batches`): each batch drawn from a few
randomly chosen classes, the N&E code's `--classes-per-batch` for PredSim on CIFAR-100
(docs/methods/predsim.md#16-ambiguities item 7).
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


def check_class_sampling(classes_per_batch, until_epoch=0) -> None:
    """ValueError naming the option unless classes_per_batch is 0 (off) or an integer >= 2 and
    classes_per_batch_until_epoch an integer >= 0 (0: for the whole run)."""
    for name, value in (("classes_per_batch", classes_per_batch), ("classes_per_batch_until_epoch", until_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if classes_per_batch == 1:
        raise ValueError(
            "classes_per_batch 1 makes every batch one class (no pair of different classes for the "
            "similarity loss): use 0 (off) or at least 2"
        )
    if until_epoch and not classes_per_batch:
        raise ValueError(f"classes_per_batch_until_epoch {until_epoch} is set but classes_per_batch is 0 (off)")


def class_sampled_batches(
    labels: torch.Tensor, batch_size: int, classes_per_batch: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """One epoch of class-sampled batches: a list of CPU index tensors that together visit every sample once.

    Each batch first draws k = min(classes_per_batch, classes with samples left this epoch) distinct classes,
    without replacement and with probability proportional to the samples each has left (torch.multinomial), then
    takes min(batch_size, what those k classes have left) of their remaining samples, uniformly at random from
    their union (which of each class's samples: the front of a per-class permutation drawn at the start of the
    epoch). So a batch holds samples of at most `classes_per_batch` classes, every sample is seen once per epoch,
    and every draw comes from `gen` (the run's seeded generator): the same seed gives the same batches.

    Where it differs from the N&E code's NClassRandomSampler (anokland/local-loss train.py, read, not copied):
    that sampler takes the classes of the next `classes_per_batch` samples of a shuffled list (so usually fewer
    distinct classes: about 18 for 20 draws from CIFAR-100's 100 classes), tops that set up with new classes only
    while it has fewer than a hard-coded 10 (not `classes_per_batch`; for 20 of 100 classes the top-up never
    runs), fills the batch with samples of those classes in shuffled order and, when they run out, with whatever
    samples come next (more classes), so its batches are always full; it draws from numpy's global generator,
    which the code never seeds. Here a batch has exactly k classes and is never topped up with other classes:
    near the end of an epoch, when the chosen classes have fewer than batch_size samples left, a batch is
    smaller (a few batches per epoch; the epoch has that many more batches). A batch never leaves a single
    sample for the end of the epoch (a batch of one sample cannot train BatchNorm): it takes one sample fewer,
    so that two are left; only a batch of at most 2 samples, which cannot, takes that last sample too (one
    class more than the limit: possible only when the epoch ends on such tiny batches, i.e. very few samples per
    class). Both pick classes in proportion to the samples they have left.
    """
    check_class_sampling(classes_per_batch)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    labels = labels.cpu().long()
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    pools = [None] * num_classes
    for c in range(num_classes):  # each class's samples in a random order, drawn class by class
        members = (labels == c).nonzero().flatten()
        pools[c] = members[torch.randperm(len(members), generator=gen)]
    left = torch.tensor([len(p) for p in pools], dtype=torch.long)
    taken = torch.zeros(num_classes, dtype=torch.long)
    batches = []
    while left.sum() > 0:
        k = min(classes_per_batch, int((left > 0).sum()))
        chosen = torch.multinomial(left.double(), k, replacement=False, generator=gen)
        # a uniform draw of batch_size samples from the chosen classes' union: shuffle the union's class labels
        union = torch.repeat_interleave(chosen, left[chosen])
        m = min(batch_size, len(union))
        if int(left.sum()) - m == 1 and m >= 3:  # leave two samples for the last batch, not one
            m -= 1
        picked = union[torch.randperm(len(union), generator=gen)[:m]]
        counts = torch.bincount(picked, minlength=num_classes)
        parts = []
        for c in chosen.tolist():
            m = int(counts[c])
            parts.append(pools[c][taken[c] : taken[c] + m])
            taken[c] += m
            left[c] -= m
        if left.sum() == 1:  # (a batch of at most 2) never leave one sample alone: BatchNorm cannot train on it
            c = int(left.nonzero()[0])
            parts.append(pools[c][taken[c] :])
            taken[c] += 1
            left[c] = 0
        batches.append(torch.cat(parts))
    return batches


class Batches:
    """Iterate (inputs, labels) batches; a new shuffle and new augmentations each time it is iterated.

    The shuffle is torch.randperm(n) from a generator seeded with `seed`, drawn first in every epoch, so that a
    DataLoader whose RandomSampler has a generator with the same seed visits the samples in the same order.
    `classes_per_batch` (0: off; set it between epochs) makes a shuffled epoch's batches class-sampled instead
    (`class_sampled_batches`, from the same generator).
    """

    def __init__(self, x, y, batch_size, *, device, mean=None, std=None, augment=None, shuffle=False, seed=0):
        self.x, self.y = x.to(device), y.to(device)
        self.text = x.ndim == 2
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment or {}
        if not self.text:
            self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.gen = torch.Generator().manual_seed(seed)
        self.classes_per_batch = 0
        self._labels_cpu = None

    def __len__(self):
        return -(-len(self.y) // self.batch_size)

    def epoch_order(self) -> torch.Tensor | None:
        """This epoch's sample order on the CPU (one torch.randperm of the run's generator, drawn first in every
        epoch), or None when not shuffling. Code that gathers per-sample tensors of its own (cached or stored
        features) calls it so as to visit the samples in the order these batches would. Not defined for
        class-sampled epochs, which are no single order cut into batch_size pieces (`epoch_batches`)."""
        if self.classes_per_batch:
            raise RuntimeError(
                "class-sampled batches (classes_per_batch) are not one sample order cut into "
                "batch_size pieces: use epoch_batches()"
            )
        return torch.randperm(len(self.y), generator=self.gen) if self.shuffle else None

    def epoch_batches(self) -> list[torch.Tensor] | None:
        """This epoch's class-sampled batches (CPU index tensors, `class_sampled_batches` with the run's
        generator), or None when the epoch is not class-sampled (classes_per_batch 0, or not shuffling)."""
        if not (self.classes_per_batch and self.shuffle):
            return None
        if self._labels_cpu is None:
            self._labels_cpu = self.y.cpu()
        return class_sampled_batches(self._labels_cpu, self.batch_size, self.classes_per_batch, self.gen)

    def _index_batches(self):
        """(CPU indices, device indices or a slice) of each batch of one epoch."""
        sampled = self.epoch_batches()
        if sampled is not None:
            for cpu_idx in sampled:
                yield cpu_idx, cpu_idx.to(self.x.device)
            return
        n = len(self.y)
        order = self.epoch_order()
        order_dev = order.to(self.x.device) if order is not None else None
        for start in range(0, n, self.batch_size):
            end = min(n, start + self.batch_size)
            if order is not None:
                yield order[start:end], order_dev[start:end]
            else:
                yield torch.arange(start, end), slice(start, end)

    def indexed(self):
        """(sample indices on the CPU, inputs, labels) batch by batch for one epoch."""
        for cpu_idx, idx in self._index_batches():
            xb, yb = self.x[idx], self.y[idx]
            if self.text:
                yield cpu_idx, xb.long(), yb
                continue
            if augments(self.augment):
                xb = random_crop_flip(
                    xb, self.augment.get("crop_padding", 0), self.augment.get("hflip", False), self.gen
                )
            yield cpu_idx, xb.float().mul_(1.0 / 255).sub_(self.mean).div_(self.std), yb

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of the samples `idx` (in that order), converted (and augmented, drawing from the run's
        generator) as an epoch's batches are: for code that needs further samples beside a batch (the SI loss's
        precomputed partners)."""
        idx = idx.to(self.x.device)
        xb, yb = self.x[idx], self.y[idx]
        if self.text:
            return xb.long(), yb
        if augments(self.augment):
            xb = random_crop_flip(xb, self.augment.get("crop_padding", 0), self.augment.get("hflip", False), self.gen)
        return xb.float().mul_(1.0 / 255).sub_(self.mean).div_(self.std), yb

    def __iter__(self):
        for _, xb, yb in self.indexed():
            yield xb, yb
