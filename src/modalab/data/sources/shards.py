"""Image-text pairs from WebDataset-format tar shards (``data.source: shards``).

Training streams ``data.root`` through :class:`~modalab.data.tar_shards.ShardStream`: shard order and a
shuffle buffer (``data.shuffle_buffer``) drawn per epoch, shards split by process and DataLoader
worker (``data.num_workers``), resumable from the checkpointed position. Evaluation reads the
held-out shards in ``data.eval_root`` (a second folder written the same way) in full on every
process, in shard order; a held-out *folder* keeps the split visible on disk and lets the training
shards be rewritten without touching it.

Labels: a sample's ``json`` may hold ``label`` (a class name); the classes are those of the training
index (``shards.json``), and a held-out label outside them is an error. A ``captions`` list in
``json`` gives alternatives: training draws one at random each time the sample is read.

``write_digits_shards`` writes scikit-learn's handwritten digits (the ``digits`` source's data and
split, 8x8 PNGs) as ``OUT/train`` and ``OUT/test`` so the shard recipes run on a fresh machine
(``modalab shards write --digits OUT``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import Field
from torch.utils.data import Dataset

from modalab.config import DataBase
from modalab.data.dataset import DataError, DataSplits, stratified_split
from modalab.data.sample import Sample
from modalab.data.safe_image import open_image
from modalab.data.tar_shards import (
    IMAGE_EXTS, ShardError, ShardStream, decode_image_text, iter_tar, read_index, write_shards,
)
from modalab.data.transforms import random_shift
from modalab.registry import register


class ShardsConfig(DataBase):
    root: str = Field(description="training shards: a folder written by `modalab shards write`")
    eval_root: str = Field(description="held-out shards, evaluated in full on every process")
    val_root: str | None = Field(None, description="validation shards (streamed training shards cannot be "
                                 "carved: without val_root the run has no val split, whatever val_fraction says)")
    image_size: int = Field(32, ge=8)
    channels: Literal[1, 3] = 3
    shuffle_buffer: int = Field(1000, ge=0, description="samples held for shuffling (0 = shard order)")
    augment: bool = False
    max_shift: int = Field(2, ge=0, description="random translation in pixels (training, with augment)")


def sample_decoder(image_size: int, channels: int, classnames: list[str], *, train: bool,
                   max_shift: int = 0, where: str = "", max_pixels: int = 64_000_000,
                   max_aspect: float = 20.0) -> Callable[[str, dict[str, bytes]], Sample]:
    """``(key, {ext: bytes}) -> Sample`` with the class index of ``json.label`` in ``classnames``;
    training draws a caption from ``json.captions`` (if present) and shifts by up to ``max_shift``."""
    base = decode_image_text(image_size, channels, max_pixels, max_aspect)
    lookup = {c: i for i, c in enumerate(classnames)}

    def decode(key: str, files: dict[str, bytes]) -> Sample:
        s = base(key, files)  # image (C, S, S) normalised, txt, json as meta
        label = s.meta.get("label")
        if label is not None:
            if str(label) not in lookup:
                raise ShardError(f"{where}: sample {key!r} has label {label!r}, not one of the training "
                                 f"classes {classnames}")
            s.label = lookup[str(label)]
        captions = s.meta.get("captions")
        if train and isinstance(captions, list) and captions:
            s.text = str(captions[int(torch.randint(len(captions), ()))])
        if train and max_shift:
            s.media = random_shift(s.media, max_shift)
        return s

    return decode


class ShardSamples(Dataset):
    """Every sample of a shard folder in shard order, held as bytes and decoded on access.

    Each shard's sample count is checked against the index, and each image's header against the
    size limits (``check``: ``(key, files) -> None`` or raises), when the folder is read: a bad
    sample is an error or is skipped and counted there, never discovered mid-evaluation."""

    def __init__(self, path: Path, decode: Callable[[str, dict[str, bytes]], Sample],
                 on_error: str = "error",
                 check: Callable[[str, dict[str, bytes]], None] | None = None) -> None:
        self.skipped: list[str] = []
        index = read_index(path)
        self.items = []
        for s in index["shards"]:
            for key, files in iter_tar(Path(path) / s["name"], on_error, self.skipped, s.get("count")):
                try:
                    if check is not None:
                        check(key, files)
                except DataError as e:
                    msg = f"{Path(path) / s['name']}: {e}"
                    if on_error == "error":
                        raise ShardError(msg + " (data.on_error=skip skips it and counts it)") from None
                    self.skipped.append(msg)
                    continue
                self.items.append((key, files))
        self.decode = decode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        return self.decode(*self.items[i])


def _folder(value: str, key: str) -> Path:
    p = Path(value).expanduser()
    if not p.is_dir():
        raise DataError(f"data.{key}: {value!r} is not a folder; write shards with "
                        f"`modalab shards write MANIFEST {value}` (or `--digits OUT` for the built-in digits)")
    return p


@register("source", "shards", schema=ShardsConfig)
def build_shards(cfg: ShardsConfig, *, seed: int) -> DataSplits:
    """Image-text tar shards streamed with a shuffle buffer; held-out shards in data.eval_root."""
    root, eval_root = _folder(cfg.root, "root"), _folder(cfg.eval_root, "eval_root")
    index = read_index(root)
    classes = list(index["classnames"]) or None
    shift = cfg.max_shift if cfg.augment else 0
    limits = {"max_pixels": cfg.max_image_pixels, "max_aspect": cfg.max_aspect_ratio}
    decode = sample_decoder(cfg.image_size, cfg.channels, classes or [], train=True, max_shift=shift,
                            where=str(root), **limits)
    train = ShardStream(
        root, decode,
        shuffle_buffer=cfg.shuffle_buffer, seed=seed, num_workers=cfg.num_workers, drop_last=True,
        on_error=cfg.on_error,
    )
    test = ShardSamples(eval_root, sample_decoder(cfg.image_size, cfg.channels, classes or [], train=False,
                                                  where=str(eval_root), **limits), cfg.on_error,
                        check=lambda key, files: header_check(key, files, **limits))
    val = None
    if cfg.val_root is not None:
        vroot = _folder(cfg.val_root, "val_root")
        val = ShardSamples(vroot, sample_decoder(cfg.image_size, cfg.channels, classes or [], train=False,
                                                 where=str(vroot), **limits), cfg.on_error,
                           check=lambda key, files: header_check(key, files, **limits))
    return DataSplits(train=train, test=test, classnames=classes, texts=list(index["texts"]),
                      image_size=cfg.image_size, channels=cfg.channels,
                      skipped=test.skipped + (val.skipped if val is not None else []),
                      train_skipped=lambda: train.skipped, val=val)


def header_check(key: str, files: dict[str, bytes], max_pixels: int, max_aspect: float) -> None:
    """Raise :class:`DataError` unless the sample has an image whose header is within the limits."""
    ext = next((e for e in IMAGE_EXTS if e in files), None)
    if ext is None:
        raise DataError(f"sample {key!r} has no image member (png/jpg/jpeg/webp)")
    open_image(files[ext], f"sample {key!r} ({key}.{ext})", max_pixels, max_aspect, decode=False).close()


# ------------------------------------------------------------------------- built-in digits


def digits_samples(test_fraction: float = 0.25, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The ``digits`` source's train/test split as shard samples: 8x8 PNG, caption, json label.

    Training samples list all caption phrasings (one is drawn per read, as the ``digits`` source
    does); test samples keep the ``digits`` source's fixed phrasing.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    from modalab.data.sources.digits import NAMES, TEMPLATES, caption

    d = load_digits()
    labels = [int(y) for y in d.target]
    train_idx, test_idx = stratified_split(labels, len(labels), test_fraction, seed)

    def sample(j: int, text: str, extra: dict[str, Any]) -> dict[str, Any]:
        img = Image.fromarray((d.images[j] * (255 / 16)).round().clip(0, 255).astype("uint8"), mode="L")
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        meta = {"label": NAMES[labels[j]], "source": f"digits/{j}", **extra}
        return {"__key__": f"{j:09d}", "png": buf.getvalue(), "txt": text, "json": json.dumps(meta)}

    every = lambda y: [caption(y, t) for t in range(len(TEMPLATES))]  # noqa: E731
    train = [sample(j, caption(labels[j], 0), {"captions": every(labels[j])}) for j in train_idx]
    test = [sample(j, caption(labels[j], i % len(TEMPLATES)), {}) for i, j in enumerate(test_idx)]
    return {"train": train, "test": test}


def write_digits_shards(out_dir: Path, size: int = 100, test_fraction: float = 0.25,
                        seed: int = 0) -> dict[str, dict[str, Any]]:
    """Write the digits as ``out_dir/train`` and ``out_dir/test`` shard folders; their indexes."""
    return {split: write_shards(samples, Path(out_dir) / split, size)
            for split, samples in digits_samples(test_fraction, seed).items()}
