"""A Kinetics-style CSV of clips: ``label,youtube_id,time_start,time_end,split`` (one row a clip).

Each row maps to a local file through ``pattern`` (``str.format`` with the row's fields; the
default ``{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`` is the name the usual Kinetics download
scripts give trimmed clips), resolved under ``root`` and required to stay inside it. With
``clip_by_time: true`` the file is the whole source video and frames are sampled from
[time_start, time_end) seconds only (by the file's timestamps); otherwise the file is the clip.

Rows whose ``split`` is in ``train_splits`` train, in ``val_splits`` validate (if none do, val is
carved from train by ``val_fraction``), in ``test_splits`` are held out; other splits are ignored.
Classes are the sorted labels of the kept rows. A row with missing fields, bad times, a missing or
unreadable file, or an empty window stops the run naming the CSV line (``on_error: error``) or is
skipped and counted (``on_error: skip``). Every file is probed once (packets only).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
from pydantic import Field

from modalab.config import DataBase
from modalab.registry import register

if TYPE_CHECKING:
    from modalab.data.dataset import DataSplits

COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")


class KineticsCsvConfig(DataBase):
    path: str = Field(..., description="the annotation CSV (header: label,youtube_id,time_start,time_end,split)")
    root: str | None = Field(None, description="folder holding the videos (default: the CSV's folder)")
    pattern: str = Field("{youtube_id}_{time_start:06d}_{time_end:06d}.mp4",
                         description="file name from the row's fields (label, youtube_id, time_start, time_end, split)")
    clip_by_time: bool = Field(False, description="files are whole videos: sample inside [time_start, time_end)")
    train_splits: list[str] = Field(default_factory=lambda: ["train"])
    val_splits: list[str] = Field(default_factory=lambda: ["val", "validate"])
    test_splits: list[str] = Field(default_factory=lambda: ["test"])
    frames_per_clip: int = Field(8, gt=0)
    sampling: Literal["uniform", "tsn"] = "tsn"
    size: int = Field(64, ge=8, description="frames are resized to size x size")


def read_rows(path: Path, cfg: KineticsCsvConfig, skipped: list[str]) -> list[dict]:
    """Parsed CSV rows ``{where, label, file, start, end, split}`` (files not yet probed)."""
    from modalab.data.dataset import DataError
    from modalab.data.sources.video_files import BadRecord, inside_root, settle

    if not path.is_file():
        raise DataError(f"kinetics_csv: {path}: no such annotation file")
    root = Path(cfg.root) if cfg.root else path.parent
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"kinetics_csv: {path}:1: header {reader.fieldnames} lacks column(s) "
                            f"{missing}; expected {','.join(COLUMNS)}")
        rows = []
        for line, rec in enumerate(reader, start=2):
            where = f"{path}:{line}"
            try:
                if any(not (rec.get(c) or "").strip() for c in COLUMNS):
                    raise BadRecord(where, f"empty field in {dict(rec)}")
                try:
                    start, end = int(float(rec["time_start"])), int(float(rec["time_end"]))
                except ValueError as e:
                    raise BadRecord(where, f"time_start/time_end are not numbers ({e})") from e
                if end <= start or start < 0:
                    raise BadRecord(where, f"time_end {end} must be after time_start {start} >= 0")
                fields = {**rec, "time_start": start, "time_end": end}
                try:
                    name = cfg.pattern.format(**fields)
                except (KeyError, ValueError, IndexError) as e:
                    raise DataError(f"kinetics_csv: data.pattern {cfg.pattern!r} cannot be filled "
                                    f"from {where} ({e!r}); fields: {', '.join(COLUMNS)}") from e
                file = inside_root(root, name, where)
            except BadRecord as e:
                settle("kinetics_csv", e.where, e.why, cfg.on_error, skipped)
                continue
            rows.append({"where": where, "label": rec["label"].strip(), "file": file,
                         "start": float(start), "end": float(end), "split": rec["split"].strip()})
    return rows


@register("source", "kinetics_csv", schema=KineticsCsvConfig)
def build_kinetics_csv(cfg: KineticsCsvConfig, *, seed: int) -> "DataSplits":
    """Kinetics-style CSV -> labelled clips; Sample.media = (T, 3, size, size)."""
    import torch

    from modalab.data.dataset import DataError, DataSplits, SampleDataset, carve_val
    from modalab.data.sample import Sample
    from modalab.data.sources.video_files import (
        BadRecord, probe_file, read_clip, sample_window, settle, window,
    )

    path = Path(cfg.path)
    skipped: list[str] = []
    parts: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for row in read_rows(path, cfg, skipped):
        part = ("train" if row["split"] in cfg.train_splits else "val" if row["split"] in cfg.val_splits
                else "test" if row["split"] in cfg.test_splits else None)
        if part is None:
            continue
        try:
            info = probe_file(row["file"], row["where"])
            span = window(info, row["start"], row["end"], row["where"]) if cfg.clip_by_time \
                else (0, info.num_frames)
        except BadRecord as e:
            settle("kinetics_csv", e.where, e.why, cfg.on_error, skipped)
            continue
        parts[part].append({**row, "info": info, "span": span})
    classes = sorted({r["label"] for rows in parts.values() for r in rows})
    if not parts["train"] or not parts["test"]:
        raise DataError(f"kinetics_csv: {path}: {len(parts['train'])} train and {len(parts['test'])} "
                        f"test clips left ({len(skipped)} skipped); need both (splits: train "
                        f"{cfg.train_splits}, test {cfg.test_splits})")
    y = {c: i for i, c in enumerate(classes)}
    train = parts["train"]
    val = parts["val"]
    if not val:
        tr_idx, val_idx = carve_val(list(range(len(train))), cfg.val_fraction, seed,
                                    labels=[y[r["label"]] for r in train])
        train, val = [train[i] for i in tr_idx], [train[i] for i in val_idx]

    def make(rows: list[dict], is_train: bool) -> Callable[[int], Sample]:
        def load(i: int) -> Sample:
            row = rows[i]
            s = int(torch.randint(2**31 - 1, ())) if is_train else i
            idx = sample_window(*row["span"], cfg.frames_per_clip, cfg.sampling, is_train, s)
            video = read_clip(row["file"], idx, row["info"], cfg.size)  # (T, 3, S, S)
            return Sample(id=row["where"], media=video, text=row["label"], label=y[row["label"]],
                          meta={"frames": np.asarray(idx).tolist(), "path": str(row["file"])})
        return load

    return DataSplits(
        train=SampleDataset(len(train), make(train, True)),
        test=SampleDataset(len(parts["test"]), make(parts["test"], False)),
        val=SampleDataset(len(val), make(val, False)) if val else None,
        classnames=classes, texts=[c.replace("_", " ") for c in classes],
        image_size=cfg.size, channels=3, skipped=skipped,
    )
