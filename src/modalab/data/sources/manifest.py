"""Users' own image-text pairs listed in a manifest.

A manifest is a JSONL file (one JSON object per line) or a CSV file with a header, with keys
``image`` (a path relative to the manifest's folder, or to ``data.root``), ``text`` (the caption)
and optionally ``label`` (a class name), ``split`` (``train``, ``val`` or ``test``) and ``group``
(the writer / speaker / source of the item). Image paths must stay inside the root. Without ``val``
records, ``data.val_fraction`` of the training records are the validation split: whole groups when
every record has a ``group``, else stratified by label. With labels present, zero-shot evaluation
uses the label names as classes.

Every image is opened once when the source is built. A missing or unreadable image is an error
naming the manifest line, unless ``data.on_error: skip``: then it is skipped, counted and listed
in the run's results.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from modalab.config import DataBase
from modalab.data.dataset import DataError, DataSplits, SampleDataset, carve_val, stratified_split
from modalab.data.safe_image import MAX_ASPECT, MAX_PIXELS, open_image
from modalab.data.sample import Sample
from modalab.data.transforms import normalize, pil_to_tensor, random_shift, resize_center_crop
from modalab.registry import register


@dataclass(frozen=True)
class Row:
    line: int
    image: Path
    text: str
    label: str | None
    split: str | None
    group: str | None = None


def read_manifest(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, record) pairs from a JSONL or CSV manifest; blank lines are ignored."""
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    records: list[tuple[int, dict[str, str]]] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"image", "text"} <= set(reader.fieldnames):
                raise DataError(
                    f"{path}:1: the CSV header must name the columns 'image' and 'text' "
                    f"(optional 'label', 'split', 'group'); got {reader.fieldnames}"
                )
            for rec in reader:
                records.append((reader.line_num, rec))
        return records
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{n}: expected a JSON object with 'image' and 'text'")
            records.append((n, rec))
    return records


def parse_rows(path: Path, root: Path) -> list[Row]:
    rows = []
    root = root.resolve()
    for n, rec in read_manifest(path):
        for key in ("image", "text"):
            if not isinstance(rec.get(key), str) or not rec[key].strip():
                raise DataError(f"{path}:{n}: missing or empty '{key}' (expected a string)")
        img = (root / rec["image"]).resolve()
        if not img.is_relative_to(root):
            raise DataError(
                f"{path}:{n}: image path '{rec['image']}' leaves the data root {root}; "
                f"set data.root to a folder that contains it"
            )
        label = rec.get("label")
        split = rec.get("split") or None
        if split not in (None, "train", "val", "test"):
            raise DataError(f"{path}:{n}: split must be 'train', 'val' or 'test', got '{split}'")
        group = rec.get("group")
        rows.append(
            Row(n, img, rec["text"], None if label in (None, "") else str(label), split,
                None if group in (None, "") else str(group))
        )
    if not rows:
        raise DataError(f"{path}: the manifest has no records")
    return rows


def check_image(row: Row, max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT) -> str | None:
    """None if the image opens and its header is within the size limits, else the reason."""
    try:
        open_image(row.image, "", max_pixels, max_aspect, decode=False).close()
    except DataError as e:
        return str(e).removeprefix(": ")
    return None


class ManifestConfig(DataBase):
    path: str = Field(description="JSONL or CSV manifest with image, text[, label, split]")
    root: str | None = Field(None, description="folder image paths are relative to")
    image_size: int = Field(32, ge=8)
    channels: Literal[1, 3] = 3
    test_fraction: float = Field(0.25, gt=0, lt=1)
    augment: bool = False
    max_shift: int = Field(2, ge=0)


@register("source", "manifest", schema=ManifestConfig)
def build_manifest(cfg: ManifestConfig, *, seed: int) -> DataSplits:
    """Your own image-text pairs from a JSONL or CSV manifest (image, text, optional label)."""
    path = Path(cfg.path)
    root = Path(cfg.root) if cfg.root else path.parent
    rows, skipped = [], []
    for row in parse_rows(path, root):
        reason = check_image(row, cfg.max_image_pixels, cfg.max_aspect_ratio)
        if reason is None:
            rows.append(row)
            continue
        msg = f"{path}:{row.line}: {reason}: {row.image}"
        if cfg.on_error == "error":
            raise DataError(msg + " (set data.on_error=skip to skip such lines)")
        skipped.append(msg)
    if not rows:
        raise DataError(f"{path}: no usable records ({len(skipped)} skipped)")

    has_labels = all(r.label is not None for r in rows)
    classnames = sorted({r.label for r in rows}) if has_labels else None  # type: ignore[type-var]
    label_of = {c: i for i, c in enumerate(classnames or [])}
    labels = [label_of[r.label] for r in rows] if has_labels else None  # type: ignore[index]

    if any(r.split for r in rows):
        train_idx = [i for i, r in enumerate(rows) if r.split != "test"]
        test_idx = [i for i, r in enumerate(rows) if r.split == "test"]
        if not train_idx or not test_idx:
            raise DataError(f"{path}: the 'split' column leaves no train or no test records")
    else:
        train_idx, test_idx = stratified_split(labels, len(rows), cfg.test_fraction, seed)
    val_rows = [i for i in train_idx if rows[i].split == "val"]
    if val_rows:  # the manifest names its validation records
        train_idx = [i for i in train_idx if rows[i].split != "val"]
        val_idx = val_rows
    else:
        groups = [r.group or "" for r in rows] if all(rows[i].group for i in train_idx) else None
        train_idx, val_idx = carve_val(train_idx, cfg.val_fraction, seed, labels=labels, groups=groups)

    def load(j: int, train: bool) -> Sample:
        row = rows[j]
        where = f"{path}:{row.line}: {row.image}"
        with open_image(row.image, where, cfg.max_image_pixels, cfg.max_aspect_ratio) as im:
            x = pil_to_tensor(im, cfg.channels)
        x = resize_center_crop(x, cfg.image_size)
        if train and cfg.augment:
            x = random_shift(x, cfg.max_shift)
        y = labels[j] if labels is not None else None
        return Sample(id=f"{path.name}:{row.line}", media=normalize(x), text=row.text, label=y)

    return DataSplits(
        train=SampleDataset(len(train_idx), lambda i: load(train_idx[i], True)),
        test=SampleDataset(len(test_idx), lambda i: load(test_idx[i], False)),
        val=SampleDataset(len(val_idx), lambda i: load(val_idx[i], False)) if val_idx else None,
        classnames=classnames,
        texts=[rows[j].text for j in train_idx],
        image_size=cfg.image_size,
        channels=cfg.channels,
        skipped=skipped,
    )
