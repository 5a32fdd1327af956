"""Variable-size handwritten digits: scikit-learn's 8x8 digits placed on canvases of random sizes.

Each digit is scaled to a random square side (8 px up to the canvas' shorter side) and placed at a
random position on a black canvas whose height and width are drawn log-uniformly (by default
8..64 rows and 8..160 columns, so aspect ratios from 1:8 to 20:1). The label, and so the caption,
is the digit's. Everything is deterministic given the seed.

The registered source ``varres_digits`` splits the 1,797 digits like ``digits`` (stratified by the
run seed), keeps each image at its canvas size (normalised to [-1, 1], background -1) and carries the
recipe's ``batching`` section (resize policy, layout, resolution curriculum), which the task
``contrastive_varres`` (``tasks/varres.py``) applies.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from modalab.config import DataBase
from modalab.data.batching import VarResBatchingSpec
from modalab.data.dataset import DataSplits, SampleDataset, carve_val, stratified_split
from modalab.data.sample import Sample
from modalab.data.sources.digits import NAMES, TEMPLATES, caption
from modalab.data.transforms import normalize
from modalab.registry import register

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


# --------------------------------------------------------------------- registered data source


class SizedDataset(SampleDataset):
    """A :class:`SampleDataset` that knows each item's image (height, width) before loading it,
    so a sampler can group items by size (``data/batching.bucket_batches``)."""

    def __init__(self, sizes: list[Size], make: Callable[[int], Sample]) -> None:
        super().__init__(len(sizes), make)
        self.sizes = sizes


def random_placement(
    size: Size, rng: np.random.Generator, min_fraction: float = 0.0
) -> tuple[int, int, int]:
    """(side, top, left) of a digit on a canvas of ``size``: side uniform in [max(min(8, h, w),
    min_fraction * min(h, w)), min(h, w)], position uniform over the places where it fits."""
    h, w = size
    low = max(min(8, h, w), math.ceil(min_fraction * min(h, w)))
    side = int(rng.integers(low, min(h, w) + 1))
    return side, int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))


class VarResDigitsConfig(DataBase):
    image_size: int = Field(
        16, ge=8, description="nominal square side: the ViT's learned-position grid and the 'fixed' resize"
    )
    channels: Literal[1, 3] = 1
    test_fraction: float = Field(0.25, gt=0, lt=1)
    min_side: int = Field(8, ge=1, description="smallest canvas side in pixels")
    max_height: int = Field(64, ge=1, description="largest canvas height in pixels")
    max_width: int = Field(160, ge=1, description="largest canvas width in pixels")
    min_digit_fraction: float = Field(
        0.0, ge=0, le=1, description="smallest digit side as a share of the canvas' shorter side"
    )
    augment: bool = Field(True, description="training: redraw the digit's size and position each time")
    captions: Literal["templates", "name"] = "templates"
    batching: VarResBatchingSpec = Field(
        default_factory=VarResBatchingSpec, description="resize policy, layout, curriculum (task contrastive_varres)"
    )

    @model_validator(mode="after")
    def _check(self) -> "VarResDigitsConfig":
        if not self.min_side <= min(self.max_height, self.max_width):
            raise ValueError(
                f"min_side={self.min_side} must be <= max_height={self.max_height} and "
                f"max_width={self.max_width}"
            )
        return self


@register("source", "varres_digits", schema=VarResDigitsConfig)
def build_varres_digits(cfg: VarResDigitsConfig, *, seed: int) -> DataSplits:
    """Handwritten digits on canvases of random sizes and aspect ratios (8x8 up to 64x160), with captions."""
    from sklearn.datasets import load_digits

    d = load_digits()
    digits = torch.tensor(d.images, dtype=torch.float32) / 16.0  # (N, 8, 8)
    labels = d.target.tolist()
    sizes = varres_sizes(len(labels), seed, cfg.min_side, cfg.max_height, cfg.max_width)
    rng = np.random.default_rng([seed, 3])
    places = [random_placement(s, rng, cfg.min_digit_fraction) for s in sizes]
    train_idx, test_idx = stratified_split(labels, len(labels), cfg.test_fraction, seed)
    train_idx, val_idx = carve_val(train_idx, cfg.val_fraction, seed, labels=labels)
    n_templates = len(TEMPLATES) if cfg.captions == "templates" else 1

    def image(j: int, place: tuple[int, int, int]) -> Tensor:
        img = normalize(place_digit(digits[j], sizes[j], *place))  # (1, h, w) in [-1, 1]
        return img.expand(3, -1, -1).contiguous() if cfg.channels == 3 else img

    def make_train(i: int) -> Sample:
        j = train_idx[i]
        place = places[j]
        if cfg.augment:  # torch's global RNG is seeded by the run
            rng_i = np.random.default_rng(int(torch.randint(2**31, ())))
            place = random_placement(sizes[j], rng_i, cfg.min_digit_fraction)
        t = int(torch.randint(n_templates, ())) if n_templates > 1 else 0
        return Sample(id=f"varres_digits/{j}", media=image(j, place), text=caption(labels[j], t), label=labels[j])

    def make_eval(split: list[int]) -> Callable[[int], Sample]:
        def make(i: int) -> Sample:
            j = split[i]
            return Sample(
                id=f"varres_digits/{j}", media=image(j, places[j]), text=caption(labels[j], i % n_templates),
                label=labels[j],
            )
        return make

    return DataSplits(
        train=SizedDataset([sizes[j] for j in train_idx], make_train),
        test=SizedDataset([sizes[j] for j in test_idx], make_eval(test_idx)),
        val=SizedDataset([sizes[j] for j in val_idx], make_eval(val_idx)) if val_idx else None,
        classnames=list(NAMES),
        texts=[caption(y, t) for y in range(10) for t in range(n_templates)],
        image_size=cfg.image_size,
        channels=cfg.channels,
    )
