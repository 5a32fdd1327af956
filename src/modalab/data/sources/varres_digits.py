"""Variable-size handwritten digits: scikit-learn's 8x8 digits placed on canvases of random sizes.

Each digit is scaled to a random square side (8 px up to the canvas' shorter side) and placed at a
random position on a black canvas whose height and width are drawn log-uniformly (by default
8..64 rows and 8..160 columns, so aspect ratios from 1:8 to 20:1). The label, and so the caption,
is the digit's. Everything is deterministic given the seed. Plain functions; the data registry
wiring lives with the other sources.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Size = tuple[int, int]


def varres_sizes(
    n: int, seed: int = 0, min_side: int = 8, max_height: int = 64, max_width: int = 160, multiple: int = 1
) -> list[Size]:
    """``n`` canvas sizes (h, w), each side log-uniform in [min_side, max], rounded up to ``multiple``."""
    if not 1 <= min_side <= min(max_height, max_width):
        raise ValueError(
            f"varres_sizes: need 1 <= min_side <= max_height, max_width; got min_side={min_side}, "
            f"max_height={max_height}, max_width={max_width}"
        )
    rng = np.random.default_rng([seed, 1])
    h = np.exp(rng.uniform(math.log(min_side), math.log(max_height + 1), n)).astype(int)
    w = np.exp(rng.uniform(math.log(min_side), math.log(max_width + 1), n)).astype(int)
    def up(v: int, hi: int) -> int:
        return min(math.ceil(int(v) / multiple) * multiple, math.ceil(hi / multiple) * multiple)

    return [(up(a, max_height), up(b, max_width)) for a, b in zip(h, w)]


def place_digit(digit: Tensor, size: Size, side: int, top: int, left: int) -> Tensor:
    """Scale an (8, 8) digit in [0, 1] to (side, side) (bilinear) and paste it on a zero (1, h, w)
    canvas at (top, left)."""
    h, w = size
    if side > min(h, w) or top + side > h or left + side > w:
        raise ValueError(f"place_digit: a {side}px digit at ({top}, {left}) does not fit a {size} canvas")
    d = digit[None, None].float()  # (1, 1, 8, 8)
    if side != d.shape[-1]:
        d = F.interpolate(d, size=(side, side), mode="bilinear", align_corners=False, antialias=side < 8)
    canvas = torch.zeros(1, h, w)
    canvas[:, top : top + side, left : left + side] = d[0].clamp(0.0, 1.0)
    return canvas


def make_varres_digits(
    n: int | None = None,
    seed: int = 0,
    min_side: int = 8,
    max_height: int = 64,
    max_width: int = 160,
    multiple: int = 1,
    channels: int = 1,
) -> tuple[list[Tensor], Tensor, list[Size]]:
    """Variable-size digit images.

    Args:
        n: number of images (None = the 1,797 digits once; more cycles through them).
        multiple: round canvas sides up to this (e.g. the ViT patch size).
        channels: 1 or 3 (grey repeated).
    Returns:
        images: list of (channels, h_i, w_i) floats in [0, 1]; labels: (n,) int64; sizes: (h_i, w_i).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    digits = torch.tensor(d.images, dtype=torch.float32) / 16.0  # (1797, 8, 8)
    targets = torch.tensor(d.target, dtype=torch.long)
    n = len(digits) if n is None else n
    if channels not in (1, 3):
        raise ValueError(f"make_varres_digits: channels must be 1 or 3, got {channels}")
    sizes = varres_sizes(n, seed, min_side, max_height, max_width, multiple)
    rng = np.random.default_rng([seed, 2])
    rounds = math.ceil(n / len(digits))
    order = np.concatenate([rng.permutation(len(digits)) for _ in range(rounds)])[:n]
    images = []
    for j, (h, w) in zip(order, sizes):
        side = int(rng.integers(min(8, h, w), min(h, w) + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        img = place_digit(digits[j], (h, w), side, top, left)  # (1, h, w)
        images.append(img.expand(3, -1, -1).contiguous() if channels == 3 else img)
    return images, targets[torch.as_tensor(order)], sizes
