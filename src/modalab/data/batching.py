"""Batches of images with different sizes (chapter 5.2.4): group by resolution, schedule resolutions.

- :func:`bucket_batches`: group items by aspect-ratio bucket, then by area, so that padding each
  batch to its largest image wastes little; :func:`padded_token_share` measures it.
- :func:`collate_padded`: pad images to the batch's largest (H, W), rounded to a multiple.
- :class:`ResolutionSchedule`: a curriculum over resolutions by training progress (the chapter's
  stage 1: 100% low; stage 2: 60/30/10 low/mid/high; stage 3: 30/40/30).
- :func:`multiscale_size`: random multi-scale resize factor in [0.8, 1.2], rounded to the patch.
- :class:`ResolutionScheduleSpec`, :class:`VarResBatchingSpec`: the strict recipe sections for them.

Everything random takes a seed (and a step or epoch), so results are reproducible.
"""

from __future__ import annotations

import bisect
import math
from typing import Literal, Sequence

import numpy as np
from pydantic import Field, model_validator
from torch import Tensor

from modalab.config import Section

Size = tuple[int, int]  # (height, width)
ASPECT_BOUNDARIES = (1 / 3, 1 / 2, 3 / 4, 4 / 3, 2.0, 3.0)  # width / height bucket edges


def aspect_bucket(size: Size, boundaries: Sequence[float] = ASPECT_BOUNDARIES) -> int:
    """Index of the aspect-ratio (width / height) bucket of ``size``."""
    h, w = size
    return bisect.bisect_right(list(boundaries), w / h)


def bucket_batches(
    sizes: Sequence[Size],
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    boundaries: Sequence[float] = ASPECT_BOUNDARIES,
    drop_last: bool = False,
) -> list[list[int]]:
    """Batches of item indices with similar aspect ratio and area, in shuffled order.

    Items are split by :func:`aspect_bucket`, shuffled, sorted by area (ties stay random) and cut
    into batches of ``batch_size``; the batch order is shuffled. Same (seed, epoch) -> same batches.
    """
    if batch_size < 1:
        raise ValueError(f"bucket_batches: batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng([seed, epoch])
    buckets: dict[int, list[int]] = {}
    for i, s in enumerate(sizes):
        buckets.setdefault(aspect_bucket(s, boundaries), []).append(i)
    batches: list[list[int]] = []
    for key in sorted(buckets):
        items = [buckets[key][j] for j in rng.permutation(len(buckets[key]))]
        items.sort(key=lambda i: sizes[i][0] * sizes[i][1])  # stable: ties keep the random order
        for a in range(0, len(items), batch_size):
            chunk = items[a : a + batch_size]
            if len(chunk) == batch_size or not drop_last:
                batches.append(chunk)
    return [batches[j] for j in rng.permutation(len(batches))]


def random_batches(n: int, batch_size: int, seed: int = 0, epoch: int = 0) -> list[list[int]]:
    """Plain shuffled batches (the pad-to-max baseline)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n).tolist()
    return [perm[a : a + batch_size] for a in range(0, n, batch_size)]


def padded_token_share(
    sizes: Sequence[Size], batches: Sequence[Sequence[int]], patch: int
) -> float:
    """Share of real patch tokens when each batch is padded to its largest height and width."""
    real = total = 0
    for b in batches:
        grids = [(math.ceil(sizes[i][0] / patch), math.ceil(sizes[i][1] / patch)) for i in b]
        real += sum(r * c for r, c in grids)
        total += len(b) * max(r for r, _ in grids) * max(c for _, c in grids)
    return real / total if total else 1.0


def collate_padded(
    images: Sequence[Tensor], multiple: int = 1, fill: float = 0.0
) -> tuple[Tensor, list[Size]]:
    """Pad (C, H_i, W_i) images at the bottom/right to a common (H, W), multiples of ``multiple``.

    Returns (B, C, H, W) and the original (H_i, W_i) of each image.
    """
    if not images:
        raise ValueError("collate_padded: no images")
    sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in images]
    h = math.ceil(max(s[0] for s in sizes) / multiple) * multiple
    w = math.ceil(max(s[1] for s in sizes) / multiple) * multiple
    out = images[0].new_full((len(images), images[0].shape[0], h, w), fill)  # (B, C, H, W)
    for i, x in enumerate(images):
        out[i, :, : x.shape[-2], : x.shape[-1]] = x
    return out, sizes


def multiscale_size(
    size: Size, seed: int, step: int, low: float = 0.8, high: float = 1.2, multiple: int = 1
) -> Size:
    """(h, w) scaled by one random factor in [low, high], each side rounded to ``multiple`` (>= it)."""
    f = float(np.random.default_rng([seed, step]).uniform(low, high))
    return tuple(max(multiple, round(s * f / multiple) * multiple) for s in size)  # type: ignore[return-value]


class ResolutionSchedule:
    """Shares of training batches at each resolution, by stage of training progress.

    Args:
        resolutions: e.g. (16, 32, 48) for low / mid / high.
        stages: (end, proportions) pairs; stage i covers progress in [end_{i-1}, end_i), the last
            end is 1.0; proportions are over ``resolutions`` and sum to 1.
    """

    def __init__(
        self, resolutions: Sequence[int], stages: Sequence[tuple[float, Sequence[float]]]
    ) -> None:
        if not stages:
            raise ValueError("ResolutionSchedule: give at least one stage")
        ends = [float(e) for e, _ in stages]
        if any(b <= a for a, b in zip(ends, ends[1:])) or ends[0] <= 0 or abs(ends[-1] - 1.0) > 1e-9:
            raise ValueError(f"ResolutionSchedule: stage ends {ends} must increase in (0, 1] and end at 1.0")
        for i, (_, p) in enumerate(stages):
            if len(p) != len(resolutions) or min(p) < 0 or abs(sum(p) - 1.0) > 1e-6:
                raise ValueError(
                    f"ResolutionSchedule: stage {i} proportions {list(p)} must be {len(resolutions)} "
                    f"non-negative numbers summing to 1 (one per resolution {list(resolutions)})"
                )
        self.resolutions = [int(r) for r in resolutions]
        self.ends = ends
        self.props = [np.asarray(p, dtype=np.float64) for _, p in stages]

    @classmethod
    def chapter(cls, low: int, mid: int, high: int) -> "ResolutionSchedule":
        """The chapter's three equal stages: 100/0/0, 60/30/10, 30/40/30."""
        stages = [(1 / 3, (1, 0, 0)), (2 / 3, (0.6, 0.3, 0.1)), (1.0, (0.3, 0.4, 0.3))]
        return cls([low, mid, high], stages)

    def stage(self, progress: float) -> int:
        """Stage index at ``progress`` in [0, 1]."""
        return min(bisect.bisect_right(self.ends, progress), len(self.ends) - 1)

    def proportions(self, progress: float) -> list[float]:
        return self.props[self.stage(progress)].tolist()

    def resolution(self, step: int, total_steps: int, seed: int = 0) -> int:
        """The resolution of batch ``step``: drawn with the stage's proportions, seeded by (seed, step)."""
        p = self.props[self.stage(step / max(1, total_steps))]
        return self.resolutions[int(np.random.default_rng([seed, step]).choice(len(p), p=p))]

    def assign(self, n: int, progress: float, seed: int = 0, step: int = 0) -> list[int]:
        """Per-sample resolutions for ``n`` samples, matching the proportions exactly (largest
        remainder), in random order."""
        p = self.props[self.stage(progress)]
        counts = np.floor(p * n).astype(int)
        rest = np.argsort(-(p * n - counts), kind="stable")[: n - counts.sum()]
        counts[rest] += 1
        out = np.repeat(self.resolutions, counts)
        return out[np.random.default_rng([seed, step]).permutation(n)].tolist()


class StageSpec(Section):
    end: float = Field(gt=0, le=1, description="training progress at which the stage ends")
    proportions: list[float]


class ResolutionScheduleSpec(Section):
    """Recipe section for a resolution curriculum and multi-scale resizing."""

    resolutions: list[int] = Field(default_factory=lambda: [16, 32, 48])
    stages: list[StageSpec] = Field(
        default_factory=lambda: [
            StageSpec(end=1 / 3, proportions=[1.0, 0.0, 0.0]),
            StageSpec(end=2 / 3, proportions=[0.6, 0.3, 0.1]),
            StageSpec(end=1.0, proportions=[0.3, 0.4, 0.3]),
        ]
    )
    multiscale: tuple[float, float] | None = Field(
        None, description="random scale range, e.g. [0.8, 1.2]"
    )

    @model_validator(mode="after")
    def _check(self) -> "ResolutionScheduleSpec":
        self.build()  # raises a ValueError that names the bad stage
        if self.multiscale is not None and not 0 < self.multiscale[0] <= self.multiscale[1]:
            raise ValueError(f"multiscale {self.multiscale} must be (low, high) with 0 < low <= high")
        return self

    def build(self) -> ResolutionSchedule:
        return ResolutionSchedule(self.resolutions, [(s.end, s.proportions) for s in self.stages])



class VarResBatchingSpec(Section):
    """Recipe section (``data.batching``) for training on images of any size.

    ``resize``: ``smart`` keeps the aspect ratio and caps each image at ``max_patches`` patches
    (Qwen2-VL's smart_resize with factor = the ViT patch: small images stay small);
    ``pix2struct`` scales each image, up or down, to the largest aspect-preserving grid of at most
    ``max_patches`` patches (Pix2Struct); ``fixed`` pads every image into the ``data.image_size``
    square (the fixed-resolution baseline). ``layout`` (``smart``/``pix2struct``): ``pack``
    = NaViT sequences of ``max_seq_len``; ``bucket`` = aspect-ratio buckets, one image per row padded
    to the batch's longest; ``pad`` = random batches, one image per row. ``schedule``: a resolution
    curriculum whose ``resolutions`` are patch budgets per image (replacing ``max_patches`` in
    training) plus optional multi-scale factors; evaluation always uses ``max_patches``.
    """

    resize: Literal["smart", "pix2struct", "fixed"] = "smart"
    layout: Literal["pack", "bucket", "pad"] = "pack"
    max_patches: int = Field(64, ge=1, description="patch budget per image (smart / pix2struct)")
    max_seq_len: int = Field(256, ge=2, description="tokens per packed sequence (layout pack)")
    token_drop: float = Field(0.0, ge=0, lt=1, description="NaViT token dropping rate in training")
    schedule: ResolutionScheduleSpec | None = None
