"""Image-caption records -> train/test :class:`DataSplits` (shared by the dataset-format readers).

A reader (COCO, Flickr, parquet / Arrow, IDX) lists :class:`PairRecord` s: where the record comes
from, how to get its image bytes, one or more captions, an optional class name and an optional
split. :func:`pair_splits` checks that every image decodes (an unreadable one raises naming file
and record, or with ``data.on_error: skip`` is skipped and listed), splits by the records' own
split when some are marked test (else the train-or-unmarked records are split by
``data.test_fraction``, stratified by label, deterministic per seed; "val" records stay out of
both), and serves samples: training draws one of a record's captions at random per read, the
held-out split always uses the first, so evaluation is deterministic and retrieval stays one
caption per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from pydantic import Field

from modalab.config import DataBase
from modalab.data.dataset import DataError, DataSplits, SampleDataset, stratified_split
from modalab.data.noise import NoiseConfig, apply_noise
from modalab.data.sample import Sample
from modalab.data.sources.image_io import check_image, image_tensor
from modalab.data.transforms import random_shift


@dataclass(frozen=True)
class PairRecord:
    """One image with its captions. ``image``: bytes, a file path, or a zero-argument callable
    returning one; ``split``: "train", "test", "val" (kept out of training) or None."""

    where: str
    image: Any  # bytes | Path | PIL.Image | Callable[[], bytes | Path | PIL.Image]
    captions: tuple[str, ...]
    label: str | None = None
    split: str | None = None

    def data(self) -> Any:
        return self.image() if callable(self.image) else self.image


class PairsConfig(DataBase):
    """Fields of every reader built on :func:`pair_splits`."""

    image_size: int = Field(32, ge=8)
    channels: Literal[1, 3] = 3
    test_fraction: float = Field(0.25, gt=0, lt=1, description="held-out share when records carry no split")
    augment: bool = False
    max_shift: int = Field(2, ge=0, description="random translation in pixels (training, with augment)")
    limit: int | None = Field(None, gt=0, description="read only the first N records (quick looks)")
    noise: NoiseConfig | None = Field(None, description="corrupt a share of training pairs (data/noise.py)")


def pair_splits(records: Sequence[PairRecord], cfg: PairsConfig, seed: int, where: str,
                check: bool = True) -> DataSplits:
    """Validate, split and serve ``records`` (see the module docstring); ``where`` names the source."""
    if cfg.limit is not None:
        records = records[: cfg.limit]
    if not records:
        raise DataError(f"{where}: no records")
    good, skipped = [], []
    for r in records:
        reason = check_image(r.data(), r.where, cfg.max_image_pixels, cfg.max_aspect_ratio) if check else None
        if reason is None:
            good.append(r)
        elif cfg.on_error == "error":
            raise DataError(reason + " (set data.on_error=skip to skip such records)")
        else:
            skipped.append(reason)
    if not good:
        raise DataError(f"{where}: no usable records ({len(skipped)} skipped)")

    has_labels = all(r.label is not None for r in good)
    classnames = sorted({str(r.label) for r in good}) if has_labels else None
    lookup = {c: i for i, c in enumerate(classnames or [])}
    labels = [lookup[str(r.label)] for r in good] if has_labels else None
    pool = [i for i, r in enumerate(good) if r.split in (None, "train")]  # "val" stays out of both
    test_idx = [i for i, r in enumerate(good) if r.split == "test"]
    train_idx = pool
    if not test_idx:  # no held-out records given: split the pool by test_fraction, per seed
        pool_labels = [labels[i] for i in pool] if labels is not None else None
        tr, te = stratified_split(pool_labels, len(pool), cfg.test_fraction, seed)
        train_idx, test_idx = [pool[i] for i in tr], [pool[i] for i in te]
    if not train_idx:
        raise DataError(f"{where}: the records' splits leave no training records")

    def load(j: int, train: bool) -> Sample:
        r = good[j]
        x = image_tensor(r.data(), r.where, cfg.image_size, cfg.channels, cfg.max_image_pixels, cfg.max_aspect_ratio)
        if train and cfg.augment:
            x = random_shift(x, cfg.max_shift)
        t = int(torch.randint(len(r.captions), ())) if train and len(r.captions) > 1 else 0
        y = labels[j] if labels is not None else None
        return Sample(id=r.where, media=x, text=r.captions[t], label=y)

    train, record = apply_noise(SampleDataset(len(train_idx), lambda i: load(train_idx[i], True)), cfg.noise, seed)
    return DataSplits(
        train=train,
        test=SampleDataset(len(test_idx), lambda i: load(test_idx[i], False)),
        classnames=classnames,
        texts=sorted({c for j in train_idx for c in good[j].captions}),  # the vocabulary: training captions only
        image_size=cfg.image_size,
        channels=cfg.channels,
        skipped=skipped,
        extras={"noise": record} if record is not None else {},
    )


def inside(root: Path, rel: str, where: str) -> Path:
    """``root / rel`` resolved, refusing paths that leave ``root``."""
    root = root.resolve()
    p = (root / rel).resolve()
    if not p.is_relative_to(root):
        raise DataError(f"{where}: image path {rel!r} leaves the image root {root}")
    return p
