"""Batches from in-memory uint8 data, kept on the training device and converted there per batch.

Images: the papers' usual augmentation, random crop with zero padding and horizontal flip, done for a whole batch
at once with the run's seeded generator, then scaling to [0, 1] and normalization, in the same operations as
torchvision's ToDtype(scale=True) + Normalize, so that without augmentation the batches equal those of the
reference DataLoader (bench.data.reference) bit for bit. Text: character indices as int64, nothing else.
No per-sample Python or PIL work in the loop. When the generator's CPU draws reach the device (each batch's, or
each epoch's in one copy: `random_draws`) is the class's switch; the batches are the same either way.

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


RANDOM_DRAWS = ("per_batch", "per_epoch")  # config key `random_draws`: when the CPU draws of `Batches` are made


def draw_crop_flip(b: int, padding: int, hflip: bool, gen: torch.Generator) -> list:
    """The random draws of `random_crop_flip` for b images, on the CPU, in its order: [row offsets, column offsets
    (both None without padding), flips (None without hflip)]. One function for both `random_draws` modes, so that
    drawing an epoch's batches ahead makes the very calls the per-batch code makes."""
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen) if padding else None
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen) if padding else None
    return [dy, dx, torch.rand(b, generator=gen) < 0.5 if hflip else None]


def crop_flip(x: torch.Tensor, padding: int, dy, dx, flip) -> torch.Tensor:
    """x cropped at offsets (dy, dx) of its zero-padded images and mirrored where `flip` (tensors on x's device, None:
    no crop / no flip)."""
    b, _, h, w = x.shape
    if dy is not None:
        padded = F.pad(x, (padding,) * 4)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if flip is not None:
        x = torch.where(flip.bool()[:, None, None, None], x.flip(3), x)
    return x


def random_crop_flip(
    x: torch.Tensor, padding: int, hflip: bool, gen: torch.Generator, non_blocking: bool = False
) -> torch.Tensor:
    """Random crops and flips of a batch drawn now from `gen` on the CPU and copied to x's device (`to_device`)."""
    draws = draw_crop_flip(len(x), padding, hflip, gen)
    return crop_flip(x, padding, *(None if t is None else to_device(t, x.device, non_blocking) for t in draws))


def to_device(t: torch.Tensor, device, non_blocking: bool = False) -> torch.Tensor:
    """t on `device`. With non_blocking a CUDA copy goes through pinned memory and the host goes on at once: a copy
    from pageable memory makes the host wait for the device's queue (a host sync), the cost `random_draws` saves."""
    device = torch.device(device)
    if not non_blocking or device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)


def one_copy(tensors: list, device) -> list:
    """[(CPU part, device part) or None] of `tensors` (CPU integer tensors or None), moved in one copy: concatenated
    as int64, pinned on CUDA, copied non_blocking. The CPU parts are views of the pinned tensor, so that a caller's
    own copy of a slice of them (`to_device`, non_blocking) does not wait for the device either."""
    present = [t.long() for t in tensors if t is not None]
    if not present:
        return [None] * len(tensors)
    host = torch.cat(present)
    if torch.device(device).type == "cuda":
        host = host.pin_memory()
    dev = host.to(device, non_blocking=True)
    out, at = [], 0
    for t in tensors:
        out.append(None if t is None else (host[at : at + len(t)], dev[at : at + len(t)]))
        at += 0 if t is None else len(t)
    return out


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

    `random_draws` (config key, `RANDOM_DRAWS`): "per_batch" draws each batch's crop offsets and flips when the
    batch is made and copies them (and, class-sampled, its indices) to the device: on CUDA one host sync per batch.
    "per_epoch" makes every draw of the epoch before its first batch, with the same calls in the same order (the
    shuffle, then batch by batch its offsets and flips), moves them in one non_blocking copy (`one_copy`) and
    slices each batch's on the device: no host sync per batch, and the same batches from the same stream. Only a
    draw made between batches would move: `take`, the SI loss's partners (`takes_per_batch`, the takes of a batch's
    size that follow each batch, has their draws made ahead too, in the per-batch order, so they are the same).
    """

    def __init__(
        self,
        x,
        y,
        batch_size,
        *,
        device,
        mean=None,
        std=None,
        augment=None,
        shuffle=False,
        seed=0,
        random_draws="per_batch",
    ):
        if random_draws not in RANDOM_DRAWS:
            raise ValueError(f"random_draws must be one of {', '.join(RANDOM_DRAWS)}, got {random_draws!r}")
        self.random_draws, self.takes_per_batch, self._reserved = random_draws, 0, []
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

    def epoch_order_moved(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(epoch_order(), the same on the device), or None when not shuffling; under random_draws per_epoch moved
        by `one_copy` (the CPU order pinned on CUDA, so that slices of it reach the device without a host sync)."""
        order = self.epoch_order()
        if order is None or self.random_draws == "per_epoch":
            return one_copy([order], self.x.device)[0]
        return order, order.to(self.x.device)

    def _epoch_draws(self) -> tuple[list[int], torch.Tensor | None, list]:
        """random_draws per_epoch: (batch sizes, CPU order or None, [row offsets, column offsets, flips] of the
        whole epoch, each None where not drawn): every draw of one epoch, with the per-batch code's calls in its
        order (the shuffle or the class-sampled batches, then for each batch its offsets and flips, then those of
        its `takes_per_batch` partner batches)."""
        n, bs = len(self.y), self.batch_size
        sampled = self.epoch_batches()
        if sampled is not None:
            sizes, order = [len(b) for b in sampled], torch.cat(sampled)
        else:
            sizes, order = [min(bs, n - start) for start in range(0, n, bs)], self.epoch_order()
        if self.text or not augments(self.augment):
            return sizes, order, [None, None, None]
        pad, hflip = self.augment.get("crop_padding", 0), self.augment.get("hflip", False)
        groups = [draw_crop_flip(b, pad, hflip, self.gen) for b in sizes for _ in range(1 + self.takes_per_batch)]
        return sizes, order, [None if groups[0][k] is None else torch.cat([g[k] for g in groups]) for k in range(3)]

    def _planned(self):
        """indexed() under random_draws per_epoch: the epoch's draws (`_epoch_draws`) moved in one copy, each batch
        its slice of them on the device; its partners' draws reserved for `take`."""
        self._reserved = []
        if not len(self.y):
            return
        sizes, order, draws = self._epoch_draws()
        order, *draws = one_copy([order, *draws], self.x.device)
        drawn = [None if d is None else d[1] for d in draws]
        groups = 1 + self.takes_per_batch if any(d is not None for d in drawn) else 0
        start = 0
        for b in sizes:
            end = start + b
            if order is None:
                cpu_idx, idx = torch.arange(start, end), slice(start, end)
            else:
                cpu_idx, idx = order[0][start:end], order[1][start:end]
            at = start * groups  # the batch's draws, then its partners': groups of b from here
            parts = [[None if d is None else d[at + g * b : at + (g + 1) * b] for d in drawn] for g in range(groups)]
            self._check_takes()
            self._reserved = parts[1:]
            xb, yb = self.x[idx], self.y[idx]
            start = end
            if self.text:
                yield cpu_idx, xb.long(), yb
                continue
            if parts:
                xb = crop_flip(xb, self.augment.get("crop_padding", 0), *parts[0])
            yield cpu_idx, self._convert(xb), yb
        self._check_takes()

    def _check_takes(self):
        if self._reserved:
            raise RuntimeError(
                f"takes_per_batch {self.takes_per_batch}: {len(self._reserved)} reserved take() draws of the last "
                "batch were not used (the batches after it would differ from random_draws per_batch)"
            )

    def _convert(self, xb: torch.Tensor) -> torch.Tensor:
        return xb.float().mul_(1.0 / 255).sub_(self.mean).div_(self.std)

    def indexed(self):
        """(sample indices on the CPU, inputs, labels) batch by batch for one epoch."""
        if self.random_draws == "per_epoch":
            yield from self._planned()
            return
        for cpu_idx, idx in self._index_batches():
            xb, yb = self.x[idx], self.y[idx]
            if self.text:
                yield cpu_idx, xb.long(), yb
                continue
            if augments(self.augment):
                xb = random_crop_flip(
                    xb, self.augment.get("crop_padding", 0), self.augment.get("hflip", False), self.gen
                )
            yield cpu_idx, self._convert(xb), yb

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of the samples `idx` (in that order), converted (and augmented, drawing from the run's
        generator) as an epoch's batches are: for code that needs further samples beside a batch (the SI loss's
        precomputed partners). Under random_draws per_epoch the draws are the next ones the epoch reserved
        (`takes_per_batch`), or else drawn now and copied without a host sync."""
        per_epoch = self.random_draws == "per_epoch"
        idx = to_device(idx, self.x.device, per_epoch)
        xb, yb = self.x[idx], self.y[idx]
        if self.text:
            return xb.long(), yb
        if augments(self.augment):
            pad = self.augment.get("crop_padding", 0)
            if per_epoch and self._reserved:
                draws = self._reserved.pop(0)
                if len(next(d for d in draws if d is not None)) != len(idx):
                    raise RuntimeError(f"take() of {len(idx)} samples, but the epoch reserved draws of a batch's size")
                xb = crop_flip(xb, pad, *draws)
            else:
                xb = random_crop_flip(xb, pad, self.augment.get("hflip", False), self.gen, per_epoch)
        return self._convert(xb), yb

    def __iter__(self):
        for _, xb, yb in self.indexed():
            yield xb, yb
