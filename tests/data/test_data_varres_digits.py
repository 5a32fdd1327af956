"""Variable-size digits: deterministic, sizes in range, the digit is on the canvas."""

import pytest
import torch

from modalab.data.sources.varres_digits import make_varres_digits, place_digit, varres_sizes


def test_sizes_range_and_determinism():
    sizes = varres_sizes(2000, seed=0)
    assert sizes == varres_sizes(2000, seed=0) and sizes != varres_sizes(2000, seed=1)
    hs, ws = [h for h, _ in sizes], [w for _, w in sizes]
    assert min(hs) >= 8 and max(hs) <= 64 and min(ws) >= 8 and max(ws) <= 160
    assert max(hs) >= 56 and max(ws) >= 140  # the range is used
    aspects = [w / h for h, w in sizes]
    assert min(aspects) < 0.3 and max(aspects) > 8
    assert all(h % 4 == 0 and w % 4 == 0 for h, w in varres_sizes(200, seed=0, multiple=4))
    with pytest.raises(ValueError, match="min_side"):
        varres_sizes(3, min_side=100)


def test_make_varres_digits():
    imgs, labels, sizes = make_varres_digits(60, seed=3, multiple=4, channels=3)
    imgs2, labels2, _ = make_varres_digits(60, seed=3, multiple=4, channels=3)
    assert len(imgs) == 60 and labels.shape == (60,) and torch.equal(labels, labels2)
    assert all(torch.equal(a, b) for a, b in zip(imgs, imgs2))
    for img, (h, w) in zip(imgs, sizes):
        assert img.shape == (3, h, w) and 0 <= float(img.min()) and float(img.max()) <= 1
        assert float(img.max()) > 0.2  # the digit is there
    assert set(labels.tolist()) == set(range(10))


def test_labels_follow_the_digit():
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs, labels, _ = make_varres_digits(30, seed=0, min_side=8, max_height=8, max_width=8)
    # 8x8 canvases hold the digit unscaled at (0, 0): recover which scan it is
    scans = torch.tensor(d.images, dtype=torch.float32) / 16
    for img, y in zip(imgs, labels):
        j = int(((scans - img[0]).abs().flatten(1).sum(1)).argmin())
        assert int(d.target[j]) == int(y)


def test_place_digit():
    digit = torch.ones(8, 8)
    c = place_digit(digit, (10, 20), 8, 1, 5)
    assert c.shape == (1, 10, 20) and c.sum() == 64 and torch.all(c[0, 1:9, 5:13] == 1)
    with pytest.raises(ValueError, match="does not fit"):
        place_digit(digit, (10, 20), 8, 3, 5)
