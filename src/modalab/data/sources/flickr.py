"""Flickr8k / Flickr30k captions: ``results.csv`` (``image_name| comment_number| comment``, the
``|``-separated Flickr30k release) or ``captions.txt`` (``image,caption``, the Flickr8k CSV), plus
the image folder; several captions per image, kept in file order.

The delimiter is read from the header line (``|`` if it has one, else ``,``); the image column is
``image_name`` or ``image``, the caption column ``comment`` or ``caption``; values are stripped.
With ``data.karpathy`` (``dataset_flickr30k.json``) images are split as in Karpathy & Fei-Fei
(train / val kept out / test); else by ``data.test_fraction`` and the seed. A short row or an empty
caption raises naming the file and line; an unreadable image raises or, with
``data.on_error: skip``, is skipped and listed.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pydantic import Field

from modalab.data.dataset import DataError, DataSplits
from modalab.data.sources.coco import karpathy_splits
from modalab.data.sources.pairs import PairRecord, PairsConfig, inside, pair_splits
from modalab.registry import register

IMAGE_COLUMNS = ("image_name", "image")
CAPTION_COLUMNS = ("comment", "caption")


def read_captions_csv(path: Path) -> dict[str, list[str]]:
    """``{image file name: [captions in file order]}`` from a Flickr captions CSV."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8") as f:
        header = f.readline()
        delim = "|" if "|" in header else ","
        cols = [c.strip() for c in header.strip().split(delim)]
        img_col = next((cols.index(c) for c in IMAGE_COLUMNS if c in cols), None)
        cap_col = next((cols.index(c) for c in CAPTION_COLUMNS if c in cols), None)
        if img_col is None or cap_col is None:
            raise DataError(f"{path}:1: the header must name an image column {IMAGE_COLUMNS} and a caption "
                            f"column {CAPTION_COLUMNS}; got {cols}")
        out: dict[str, list[str]] = {}
        for n, row in enumerate(csv.reader(f, delimiter=delim), start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) <= max(img_col, cap_col):
                raise DataError(f"{path}:{n}: expected {len(cols)} '{delim}'-separated fields, got {row!r:.120}")
            name, text = row[img_col].strip(), " ".join(row[cap_col].split())
            if not name or not text:
                raise DataError(f"{path}:{n}: empty image name or caption")
            out.setdefault(name, []).append(text)
    if not out:
        raise DataError(f"{path}: no caption rows")
    return out


class FlickrConfig(PairsConfig):
    captions: str = Field(description="results.csv (Flickr30k) or captions.txt (Flickr8k)")
    images: str = Field(description="the image folder")
    karpathy: str | None = Field(None, description="Karpathy split file (dataset_flickr30k.json)")


@register("source", "flickr", schema=FlickrConfig)
def build_flickr(cfg: FlickrConfig, *, seed: int) -> DataSplits:
    """Flickr8k/30k: results.csv or captions.txt + image folder; Karpathy split if given."""
    path = Path(cfg.captions)
    splits = karpathy_splits(Path(cfg.karpathy)) if cfg.karpathy else None
    records, skipped = [], []
    for name, caps in read_captions_csv(path).items():
        where = f"{path.name}:{name}"
        split = None
        if splits is not None:
            split = splits.get(name)
            if split is None:
                skipped.append(f"{where}: not in the Karpathy split file")
                continue
        records.append(PairRecord(where, inside(Path(cfg.images), name, where), tuple(caps), split=split))
    kept_out = sum(r.split == "val" for r in records)
    data = pair_splits(records, cfg, seed, where=str(path))
    data.skipped[:0] = skipped
    if kept_out:
        data.skipped.append(f"{kept_out} Karpathy 'val' images kept out of train and test")
    return data
