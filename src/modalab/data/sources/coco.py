"""COCO captions (``captions_train2014.json`` + the image folder), optionally split the Karpathy way.

``data.annotations`` lists one or more COCO caption files (``images``: id, file_name;
``annotations``: image_id, caption; about 5 captions per image) and ``data.images`` the image
folder of each, in the same order. With ``data.karpathy`` (``dataset_coco.json``, whose ``images``
carry ``cocoid`` / ``filename`` and ``split`` in train / restval / val / test) images are split as
in Karpathy & Fei-Fei: train + restval train, test is held out, val is kept out of both (counted
in ``num_val_kept_out``-style messages). Without it, the split is ``data.test_fraction`` by seed.

A malformed file, an annotation that names an unknown image, or an image path leaving its folder
raises naming file and record; an unreadable image raises or, with ``data.on_error: skip``, is
skipped and listed. Images without captions are listed as skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from modalab.data.dataset import DataError, DataSplits
from modalab.data.sources.pairs import PairRecord, PairsConfig, inside, pair_splits
from modalab.registry import register

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def karpathy_splits(path: Path) -> dict[str, str]:
    """``{cocoid or filename: train|val|test}`` from a Karpathy split file (``dataset_*.json``)."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: expected a Karpathy split file with an 'images' list")
    out: dict[str, str] = {}
    for n, im in enumerate(data["images"]):
        split = KARPATHY_SPLITS.get(im.get("split")) if isinstance(im, dict) else None
        if split is None or "filename" not in im:
            raise DataError(f"{path}: images[{n}] needs 'filename' and 'split' in {sorted(KARPATHY_SPLITS)}, "
                            f"got {im!r:.120}")
        out[str(im["filename"])] = split
        if "cocoid" in im:
            out[str(im["cocoid"])] = split
    return out


def coco_records(ann_path: Path, image_root: Path, splits: dict[str, str] | None,
                 skipped: list[str]) -> list[PairRecord]:
    """One record per captioned image of a COCO caption file (captions in annotation order)."""
    data = read_json(ann_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise DataError(f"{ann_path}: expected a COCO captions file with 'images' and 'annotations' lists")
    files: dict[Any, str] = {}
    for n, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise DataError(f"{ann_path}: images[{n}] needs 'id' and 'file_name', got {im!r:.120}")
        files[im["id"]] = im["file_name"]
    caps: dict[Any, list[str]] = {i: [] for i in files}
    for n, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or not isinstance(a.get("caption"), str) or not a["caption"].strip():
            raise DataError(f"{ann_path}: annotations[{n}] needs a non-empty 'caption', got {a!r:.120}")
        if a.get("image_id") not in caps:
            raise DataError(f"{ann_path}: annotations[{n}] names image_id {a.get('image_id')!r}, "
                            f"which is not in 'images'")
        caps[a["image_id"]].append(" ".join(a["caption"].split()))
    records = []
    for i, name in files.items():
        where = f"{ann_path.name}:image {i}"
        if not caps[i]:
            skipped.append(f"{where}: no captions")
            continue
        split = None
        if splits is not None:
            split = splits.get(str(i), splits.get(name))
            if split is None:
                skipped.append(f"{where}: not in the Karpathy split file")
                continue
        records.append(PairRecord(where, inside(image_root, name, where), tuple(caps[i]), split=split))
    return records


class CocoConfig(PairsConfig):
    annotations: list[str] = Field(description="COCO captions_*.json files")
    images: list[str] = Field(description="the image folder of each annotation file, in the same order")
    karpathy: str | None = Field(None, description="Karpathy split file (dataset_coco.json)")


@register("source", "coco", schema=CocoConfig)
def build_coco(cfg: CocoConfig, *, seed: int) -> DataSplits:
    """COCO captions: captions_*.json + image folders; ~5 captions per image; Karpathy split."""
    if len(cfg.annotations) != len(cfg.images):
        raise DataError(f"data.annotations has {len(cfg.annotations)} files but data.images "
                        f"{len(cfg.images)} folders; give one image folder per annotation file")
    splits = karpathy_splits(Path(cfg.karpathy)) if cfg.karpathy else None
    skipped: list[str] = []
    records = [r for a, im in zip(cfg.annotations, cfg.images)
               for r in coco_records(Path(a), Path(im), splits, skipped)]
    kept_out = sum(r.split == "val" for r in records)
    data = pair_splits(records, cfg, seed, where=", ".join(cfg.annotations))
    data.skipped[:0] = skipped
    if kept_out:
        data.skipped.append(f"{kept_out} Karpathy 'val' images kept out of train and test")
    return data
