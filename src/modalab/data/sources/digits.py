"""scikit-learn's 1,797 real handwritten digits (8x8, shipped with the package) with captions.

Images are upsampled to ``image_size`` (bilinear) and normalised; the test split is stratified and
deterministic by the run seed, and ``data.val_fraction`` of the rest is the validation split
(stratified, seen like test: no augmentation, fixed captions). Training captions are drawn at
random from several phrasings per class ("a handwritten seven", "the digit 7 written by hand",
...); each test sample has one fixed phrasing, so evaluation is deterministic. ``data.noise``
corrupts a share of the training pairs (ALIGN's noisy pairs, ``data/noise.py``): a swapped caption
comes from another training digit, which is of the same class about one time in ten, so
``swap: 0.2`` mislabels about 18% of the pairs.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from modalab.config import DataBase
from modalab.data.dataset import DataSplits, SampleDataset, carve_val, stratified_split
from modalab.data.noise import NoiseConfig, apply_noise
from modalab.data.sample import Sample
from modalab.data.transforms import normalize, random_shift
from modalab.registry import register

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = [
    "a handwritten {name}",
    "the digit {digit} written by hand",
    "a photo of the number {name}",
    "a scanned handwritten digit {name}",
    "an image of a {name}",
    "the number {digit}, handwritten",
]


def caption(label: int, template: int) -> str:
    return TEMPLATES[template % len(TEMPLATES)].format(name=NAMES[label], digit=label)


def load_digit_images(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as (N, 1, S, S) floats in [0, 1] and (N,) int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8)
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.clamp(0.0, 1.0), torch.tensor(d.target, dtype=torch.long)


class DigitsConfig(DataBase):
    image_size: int = Field(32, ge=8)
    channels: Literal[1, 3] = 1
    test_fraction: float = Field(0.25, gt=0, lt=1)
    augment: bool = True
    max_shift: int = Field(2, ge=0, description="random translation in pixels (training only)")
    captions: Literal["templates", "name"] = "templates"
    noise: NoiseConfig | None = Field(None, description="corrupt a share of training pairs (data/noise.py)")


@register("source", "digits", schema=DigitsConfig)
def build_digits(cfg: DigitsConfig, *, seed: int) -> DataSplits:
    """scikit-learn handwritten digits (1,797 real 8x8 scans) upsampled, with text captions."""
    images, labels = load_digit_images(cfg.image_size)
    if cfg.channels == 3:
        images = images.expand(-1, 3, -1, -1).contiguous()
    images = normalize(images)
    train_idx, test_idx = stratified_split(labels.tolist(), len(labels), cfg.test_fraction, seed)
    train_idx, val_idx = carve_val(train_idx, cfg.val_fraction, seed, labels=labels.tolist())
    n_templates = len(TEMPLATES) if cfg.captions == "templates" else 1

    def make_train(i: int) -> Sample:
        j = train_idx[i]
        y = int(labels[j])
        t = int(torch.randint(n_templates, ())) if n_templates > 1 else 0
        img = random_shift(images[j], cfg.max_shift) if cfg.augment else images[j]
        return Sample(id=f"digits/{j}", media=img, text=caption(y, t), label=y)

    def make_eval(split: list[int]):
        def make(i: int) -> Sample:
            j = split[i]
            y = int(labels[j])
            return Sample(id=f"digits/{j}", media=images[j], text=caption(y, i % n_templates), label=y)
        return make

    texts = [caption(y, t) for y in range(10) for t in range(n_templates)]
    train, record = apply_noise(SampleDataset(len(train_idx), make_train), cfg.noise, seed)
    return DataSplits(
        train=train,
        test=SampleDataset(len(test_idx), make_eval(test_idx)),
        val=SampleDataset(len(val_idx), make_eval(val_idx)) if val_idx else None,
        classnames=list(NAMES),
        texts=texts,
        image_size=cfg.image_size,
        channels=cfg.channels,
        extras={"noise": record} if record is not None else {},
    )
