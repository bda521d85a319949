"""The fast on-device batches against the reference torchvision DataLoader: the same batches without
augmentation (exact), the same augmentation statistics with it."""

import numpy as np
import pytest
import torch
from scipy import stats

from bench.data.loader import Batches
from bench.data.reference import reference_loader

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]


@pytest.mark.parametrize("shuffle", [False, True])
def test_same_batches_without_augmentation(shuffle):
    x = torch.randint(0, 256, (203, 3, 8, 8), dtype=torch.uint8)
    y = torch.randint(0, 10, (203,))
    fast = Batches(x, y, 32, device="cpu", mean=MEAN, std=STD, shuffle=shuffle, seed=7)
    ref = reference_loader(x, y, 32, mean=MEAN, std=STD, shuffle=shuffle, seed=7)
    for _ in range(3):  # every epoch, not just the first
        pairs = list(zip(fast, ref, strict=True))
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in pairs)


def test_same_text_batches():
    x = torch.randint(0, 72, (50, 64), dtype=torch.uint8)
    y = torch.randint(0, 4, (50,))
    for (xa, ya), (xb, yb) in zip(
        Batches(x, y, 16, device="cpu", shuffle=True, seed=1),
        reference_loader(x, y, 16, shuffle=True, seed=1),
        strict=True,
    ):
        assert xa.dtype == torch.long and torch.equal(xa, xb) and torch.equal(ya, yb)


def first_offset(codes: torch.Tensor, padding: int) -> int:
    """Codes along one line of a crop: 0 for padding, original index + 1 inside the image. The crop started at
    padded index = offset, so the first inside position j with code v gives offset = v - 1 - j + padding."""
    j = int(torch.nonzero(codes)[0])
    return int(codes[j]) - 1 - j + padding


def offsets_and_flips(batches, size, padding):
    """Recover each sample's crop offsets and flip from images whose pixels encode their own column and row."""
    dx, dy, flips = [], [], []
    for xb, _ in batches:
        for img in xb:
            cols, rows = img[0, size // 2], img[1, :, size // 2]
            inside = cols[cols > 0]
            flipped = bool(inside[0] > inside[-1])
            dx.append(first_offset(cols.flip(0) if flipped else cols, padding))
            dy.append(first_offset(rows, padding))
            flips.append(flipped)
    return np.array(dx), np.array(dy), np.array(flips)


def coded_images(n, size):
    """Channel 0 = column index + 1, channel 1 = row index + 1 (0 is left for the zero padding)."""
    cols = torch.arange(1, size + 1, dtype=torch.uint8).expand(size, size)
    img = torch.stack([cols, cols.t(), torch.zeros(size, size, dtype=torch.uint8)])
    return img.expand(n, 3, size, size).contiguous()


def decode(batches):
    """Undo the normalization: back to the integer codes."""
    for xb, yb in batches:
        yield torch.round((xb * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)) * 255), yb


def test_augmentation_statistics_match_the_reference():
    size, padding, n = 16, 4, 3000
    x, y = coded_images(n, size), torch.zeros(n, dtype=torch.long)
    aug = {"crop_padding": padding, "hflip": True}
    ours = offsets_and_flips(
        decode(Batches(x, y, 500, device="cpu", mean=MEAN, std=STD, augment=aug, seed=3)), size, padding
    )
    ref = offsets_and_flips(decode(reference_loader(x, y, 500, mean=MEAN, std=STD, augment=aug, seed=3)), size, padding)
    for a, b in zip(ours[:2], ref[:2]):  # crop offsets: uniform over 0..2*padding in both, same distribution
        assert set(np.unique(a)) == set(range(2 * padding + 1)) == set(np.unique(b))
        table = np.array([np.bincount(a, minlength=9), np.bincount(b, minlength=9)])
        assert stats.chi2_contingency(table).pvalue > 1e-3
        assert stats.chisquare(np.bincount(a, minlength=9)).pvalue > 1e-3
    for flips in (ours[2], ref[2]):  # flip rate 0.5
        assert abs(flips.mean() - 0.5) < 4 * np.sqrt(0.25 / n)


def test_profiles_cap_real_data_with_one_fixed_subset():
    from bench.data.tensors import TensorData

    x = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 1, 2, 2).contiguous()
    y = torch.arange(50) % 5
    data = TensorData(x, y, x[:20], y[:20], 5)
    a, b = data.subset(10, 4), data.subset(10, 4)
    assert a.x_train.shape == (10, 1, 2, 2) and a.x_test.shape == (4, 1, 2, 2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)  # the same for every run
    picked = a.x_train[:, 0, 0, 0].long()
    assert torch.equal(a.y_train, picked % 5) and picked.tolist() == sorted(set(picked.tolist()))
    whole = data.subset(None, 1000)
    assert torch.equal(whole.x_train, x) and torch.equal(whole.x_test, x[:20])
