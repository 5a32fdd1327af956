"""WebDataset / img2dataset tar shards as found in the wild (``data.source: webdataset``).

``data.urls`` names local shards with brace ranges (``data-{000000..000099}.tar``), lists
(``{a,b}``) and several patterns joined by ``::`` (the ``webdataset`` package's syntax). Inside a
tar the files of a sample share a key, the member name up to the first dot of its base name
(``000000123.jpg``, ``000000123.txt``, ``000000123.json``), as ``webdataset`` and img2dataset
write them; no index file is needed. The image is the first of ``jpg jpeg png webp``; the caption
is ``txt``, else ``json["caption"]`` or ``json["text"]``; a ``json["label"]`` is a class name and a
``json["captions"]`` list gives training alternatives (one drawn per read).

Building the source scans every shard once, reading only the small ``txt`` / ``json`` members
(tar headers let it seek past the images), for the per-shard counts that splitting and resume need
and for the captions the vocabulary is built from. Training then streams through
:class:`~modalab.data.tar_shards.ShardStream`: shards split by process and DataLoader worker, a shuffle
buffer, a resumable position. The held-out set is ``data.eval_urls``, or else the last
``data.test_fraction`` of the shards (at least one), read in full.

A sample without an image or a caption, or a corrupt tar, raises naming the shard and key, or with
``data.on_error: skip`` is skipped and listed. :func:`write_webdataset` writes this layout
(``modalab shards write --format webdataset``).
"""

from __future__ import annotations

import json
import math
import os
import re
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import torch
from pydantic import Field
from torch.utils.data import Dataset

from modalab.data.dataset import DataError, DataSplits
from modalab.data.sample import Sample
from modalab.data.tar_shards import ShardError, ShardStream, _add, iter_tar
from modalab.data.safe_image import MAX_ASPECT, MAX_PIXELS
from modalab.data.sources.image_io import image_tensor
from modalab.data.transforms import random_shift
from modalab.config import DataBase
from modalab.registry import register

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_urls(urls: str | list[str]) -> list[str]:
    """Brace-expand ``urls`` (``a-{000..012}.tar``, ``{x,y}``; ``::`` separates patterns)."""
    patterns = [p for u in ([urls] if isinstance(urls, str) else urls) for p in u.split("::") if p.strip()]
    out: list[str] = []
    for p in patterns:
        m = _BRACE.search(p)
        if m is None:
            out.append(p.strip())
            continue
        body = m.group(1)
        rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
        if rng:
            lo, hi = rng.group(1), rng.group(2)
            if int(hi) < int(lo):
                raise DataError(f"data.urls: range {{{body}}} in {p!r} runs backwards")
            width = len(lo) if lo.startswith("0") else 0
            items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
        else:
            items = body.split(",")
        out.extend(expand_urls([p[: m.start()] + it + p[m.end():] for it in items]))
    return out


def local_shards(urls: str | list[str], key: str) -> list[Path]:
    paths = []
    for u in expand_urls(urls):
        if "://" in u and not u.startswith("file://"):
            raise DataError(f"data.{key}: {u!r} is remote; modalab reads local shards only (download them first)")
        p = Path(u.removeprefix("file://")).expanduser()
        if not p.is_file():
            raise DataError(f"data.{key}: shard {p} not found (expanded from {urls!r})")
        paths.append(p.resolve())
    if not paths:
        raise DataError(f"data.{key}: {urls!r} names no shards")
    return paths


def caption_of(files: dict[str, Any], meta: dict[str, Any]) -> str:
    txt = files.get("txt")
    text = txt.decode("utf-8") if isinstance(txt, bytes) else (txt or "")
    if not text.strip():
        text = str(meta.get("caption") or meta.get("text") or "")
    return " ".join(text.split())


def scan_shard(path: Path, on_error: str, skipped: list[str]) -> tuple[int, list[str], set[str]]:
    """(usable samples, captions, class names) of one shard, reading only txt / json members."""
    count, texts, classes = 0, [], set()
    groups: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, "r") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, _, ext = m.name.rsplit("/", 1)[-1].partition(".")
                if key not in groups:
                    groups[key] = {}
                    order.append(key)
                if ext in ("txt", "json"):
                    f = tar.extractfile(m)
                    groups[key][ext] = f.read() if f is not None else b""
                else:
                    groups[key][ext] = None
    except (tarfile.TarError, OSError, EOFError) as e:
        msg = f"{path}: corrupted shard ({type(e).__name__}: {e})"
        if on_error == "error":
            raise DataError(msg + "; set data.on_error=skip to use the samples before the damage")
        skipped.append(msg)
    for key in order:
        files = groups[key]
        try:
            meta = json.loads(files["json"]) if files.get("json") else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            meta, bad = {}, f"invalid json ({e})"
        else:
            bad = None
        text = caption_of(files, meta if isinstance(meta, dict) else {})
        if bad is None and not any(e in files for e in IMAGE_EXTS):
            bad = f"no image member ({'/'.join(IMAGE_EXTS)}); members: {sorted(files)}"
        if bad is None and not text:
            bad = "no caption (txt, or caption/text in json)"
        if bad is not None:
            msg = f"{path}: sample {key!r}: {bad}"
            if on_error == "error":
                raise DataError(msg + " (set data.on_error=skip to skip such samples)")
            skipped.append(msg)
            continue
        count += 1
        texts.append(text)
        texts.extend(str(t) for t in meta.get("captions", []) if isinstance(meta, dict))
        if isinstance(meta, dict) and meta.get("label") is not None:
            classes.add(str(meta["label"]))
    return count, texts, classes


def decoder(size: int, channels: int, classnames: list[str], *, train: bool, max_shift: int,
            shard: str = "", max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT
            ) -> Callable[[str, dict[str, bytes]], Sample]:
    """``(key, {ext: bytes}) -> Sample`` for this layout (see the module docstring)."""
    lookup = {c: i for i, c in enumerate(classnames)}

    def decode(key: str, files: dict[str, bytes]) -> Sample:
        ext = next((e for e in IMAGE_EXTS if e in files), None)
        if ext is None:
            raise ShardError(f"{shard}: sample {key!r} has no image member")
        meta = json.loads(files["json"]) if files.get("json") else {}
        x = image_tensor(files[ext], f"{shard}: sample {key!r}.{ext}", size, channels, max_pixels, max_aspect)
        text = caption_of(files, meta)
        caps = meta.get("captions")
        if train and isinstance(caps, list) and caps:
            text = str(caps[int(torch.randint(len(caps), ()))])
        if train and max_shift:
            x = random_shift(x, max_shift)
        label = meta.get("label")
        if label is not None and str(label) not in lookup:
            raise ShardError(f"{shard}: sample {key!r} has label {label!r}, not a training class {classnames}")
        y = lookup[str(label)] if label is not None and lookup else None
        return Sample(id=key, media=x, text=text, label=y, meta=meta)

    return decode


class HeldOut(Dataset):
    """Every usable sample of some shards in order, held as bytes and decoded on access."""

    def __init__(self, shards: list[Path], make: Callable[[str], Callable], on_error: str,
                 skipped: list[str]) -> None:
        self.items = []
        for p in shards:
            decode = make(str(p))
            for key, files in iter_tar(p, on_error, skipped):
                if not any(e in files for e in IMAGE_EXTS):
                    msg = f"{p}: sample {key!r}: no image member; members: {sorted(files)}"
                    if on_error == "error":
                        raise DataError(msg + " (set data.on_error=skip to skip such samples)")
                    skipped.append(msg)
                    continue
                self.items.append(((key, files), decode))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        (key, files), decode = self.items[i]
        return decode(key, files)


class WebDatasetConfig(DataBase):
    urls: str | list[str] = Field(description="training shards, brace-expanded: data-{000000..000099}.tar")
    eval_urls: str | list[str] | None = Field(None, description="held-out shards (default: the last shards)")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="share of shards held out without eval_urls")
    image_size: int = Field(32, ge=8)
    channels: Literal[1, 3] = 3
    shuffle_buffer: int = Field(1000, ge=0)
    augment: bool = False
    max_shift: int = Field(2, ge=0)


@register("source", "webdataset", schema=WebDatasetConfig)
def build_webdataset(cfg: WebDatasetConfig, *, seed: int) -> DataSplits:
    """WebDataset / img2dataset tar shards (brace ranges, no index), streamed and resumable."""
    train = local_shards(cfg.urls, "urls")
    if cfg.eval_urls is not None:
        test = local_shards(cfg.eval_urls, "eval_urls")
    else:
        n_test = max(1, math.floor(len(train) * cfg.test_fraction))
        if n_test >= len(train):
            raise DataError(f"data.urls: {len(train)} shard(s) leave none for training after holding out "
                            f"{n_test}; give data.eval_urls or more shards")
        train, test = train[:-n_test], train[-n_test:]
    skipped: list[str] = []
    shards, texts, classes = [], set(), set()
    for p in train:
        n, t, c = scan_shard(p, cfg.on_error, skipped)
        shards.append({"name": str(p), "count": n})
        texts.update(t)
        classes |= c
    index = {"shards": shards, "texts": sorted(texts), "classnames": sorted(classes)}
    names = index["classnames"]
    shift = cfg.max_shift if cfg.augment else 0
    folder = Path(os.path.commonpath([str(p.parent) for p in train]))
    limits = {"max_pixels": cfg.max_image_pixels, "max_aspect": cfg.max_aspect_ratio}
    stream = ShardStream(folder, decoder(cfg.image_size, cfg.channels, names, train=True, max_shift=shift, **limits),
                         index=index, shuffle_buffer=cfg.shuffle_buffer, seed=seed,
                         num_workers=cfg.num_workers, drop_last=True, on_error=cfg.on_error)
    held = HeldOut(test, lambda s: decoder(cfg.image_size, cfg.channels, names, train=False, max_shift=0, shard=s,
                                           **limits),
                   cfg.on_error, skipped)
    return DataSplits(train=stream, test=held, classnames=names or None, texts=index["texts"],
                      image_size=cfg.image_size, channels=cfg.channels, skipped=skipped,
                      train_skipped=lambda: stream.skipped)


def write_webdataset(samples: Iterable[dict[str, Any]], out_dir: Path, size: int = 1000,
                     prefix: str = "data") -> str:
    """Write ``{"__key__", ext: bytes | str}`` samples as ``prefix-NNNNNN.tar`` shards of ``size``
    (no index file); returns the brace pattern naming them."""
    if size <= 0:
        raise ValueError(f"shard size must be positive, got {size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tar, count, n = None, 0, 0
    for s in samples:
        if tar is None or count == size:
            if tar is not None:
                tar.close()
            tar, count, n = tarfile.open(out_dir / f"{prefix}-{n:06d}.tar.tmp", "w"), 0, n + 1
        key = str(s["__key__"])
        if "/" in key or "." in key:
            raise ShardError(f"sample key {key!r} must be a plain name without dots")
        for ext, value in s.items():
            if ext != "__key__":
                _add(tar, f"{key}.{ext}", value.encode("utf-8") if isinstance(value, str) else bytes(value))
        count += 1
    if tar is not None:
        tar.close()
    if n == 0:
        raise ShardError("no samples to write")
    for i in range(n):  # publish complete shards only
        (out_dir / f"{prefix}-{i:06d}.tar.tmp").replace(out_dir / f"{prefix}-{i:06d}.tar")
    return str(out_dir / f"{prefix}-{{{0:06d}..{n - 1:06d}}}.tar")
