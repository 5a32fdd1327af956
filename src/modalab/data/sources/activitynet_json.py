"""ActivityNet / THUMOS-style JSON annotations for temporal action localisation.

    {"database": {"<video_id>": {"subset": "training", "duration": 12.0, "fps": 8,
        "annotations": [{"segment": [1.5, 3.1], "label": "zoom_in"}, ...]}, ...}}

The ActivityNet 1.3 layout; ActionFormer's THUMOS14 conversion is the same with ``fps`` and
``segment(frames)`` next to ``segment``. A segment is read in seconds (``segment``); without it,
``segment(frames)`` is divided by the record's ``fps`` (fps-aware), and then the file's own frame
rate must agree with that fps within 1 % (otherwise the frame numbers refer to another encode). The
file is ``pattern`` filled with ``video_id`` under ``root`` (kept inside it). Times are checked
against the file's duration (from its timestamps): segments are clipped to it, and one that starts
after the end is a bad record.

A video becomes ``num_steps`` frames sampled uniformly over its whole duration (frame on screen at
each step's centre time); ``seconds_per_step = duration / num_steps`` so a step k covers
[k, k + 1) x seconds_per_step, as ``tasks/video.py`` (``video_localization``) expects.
``subset`` picks the split (ActivityNet: train on ``training``, evaluate on ``validation``;
THUMOS14: ``Validation`` trains, ``Test`` is held out); validation is carved from train.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from pydantic import Field

from modalab.config import DataBase
from modalab.registry import register

if TYPE_CHECKING:
    from modalab.data.dataset import DataSplits


class ActivityNetJsonConfig(DataBase):
    path: str = Field(..., description="the annotation JSON ({'database': {video_id: {...}}})")
    root: str | None = Field(None, description="folder holding the videos (default: the JSON's folder)")
    pattern: str = Field("{video_id}.mp4", description="file name from video_id (ActivityNet: v_{video_id}.mp4)")
    train_subsets: list[str] = Field(default_factory=lambda: ["training"])
    test_subsets: list[str] = Field(default_factory=lambda: ["validation"])
    num_steps: int = Field(48, gt=0, description="frames per video the model sees (uniform over the video)")
    size: int = Field(32, ge=8, description="frames are resized to size x size")


def _segments(rec: dict, where: str, duration: float, file_fps: float) -> list[dict]:
    """[{label (name), start, end}] in seconds, clipped to ``duration``."""
    from modalab.data.sources.video_files import BadRecord

    anns = rec.get("annotations")
    if not isinstance(anns, list):
        raise BadRecord(where, "has no 'annotations' list")
    out = []
    for k, a in enumerate(anns):
        here = f"{where}.annotations[{k}]"
        if not isinstance(a, dict) or not str(a.get("label", "")).strip():
            raise BadRecord(here, "needs a 'label'")
        if "segment" in a:
            seg = a["segment"]
        elif "segment(frames)" in a:
            fps = rec.get("fps")
            if not isinstance(fps, (int, float)) or fps <= 0:
                raise BadRecord(here, "'segment(frames)' needs the video's 'fps' in the record")
            if abs(file_fps - fps) > 0.01 * fps:
                raise BadRecord(here, f"annotation fps {fps} differs from the file's {file_fps:.3f}: "
                                      "frame numbers would point at the wrong times")
            seg = [float(v) / fps for v in a["segment(frames)"]]
        else:
            raise BadRecord(here, "needs 'segment' [start, end] in seconds or 'segment(frames)'")
        if (not isinstance(seg, (list, tuple)) or len(seg) != 2
                or not all(isinstance(v, (int, float)) for v in seg)):
            raise BadRecord(here, f"segment {seg!r} is not [start, end]")
        start, end = float(seg[0]), float(seg[1])
        if not end > start >= 0:
            raise BadRecord(here, f"segment [{start}, {end}] must have 0 <= start < end")
        if start >= duration:
            raise BadRecord(here, f"segment starts at {start} s, after the video's end ({duration:.3f} s)")
        out.append({"label": str(a["label"]).strip(), "start": start, "end": min(end, duration)})
    return out


@register("source", "activitynet_json", schema=ActivityNetJsonConfig)
def build_activitynet_json(cfg: ActivityNetJsonConfig, *, seed: int) -> "DataSplits":
    """Untrimmed videos with labelled segments; Sample.media = (num_steps, 3, S, S),
    meta['segments'] (class index, seconds) and meta['seconds_per_step']."""
    from modalab.data.dataset import DataError, DataSplits, SampleDataset, carve_val
    from modalab.data.sample import Sample
    from modalab.data.sources.video_files import (
        BadRecord, inside_root, probe_file, read_clip, settle, time_to_index,
    )

    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"activitynet_json: {path}: no such annotation file")
    try:
        db = json.loads(path.read_text(encoding="utf-8"))["database"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"activitynet_json: {path}: expected JSON with a 'database' object "
                        f"({type(e).__name__}: {e})") from e
    root = Path(cfg.root) if cfg.root else path.parent
    skipped: list[str] = []
    parts: dict[str, list[dict]] = {"train": [], "test": []}
    for vid, rec in db.items():
        where = f"{path}:database[{vid!r}]"
        subset = rec.get("subset") if isinstance(rec, dict) else None
        part = "train" if subset in cfg.train_subsets else "test" if subset in cfg.test_subsets else None
        if part is None:
            continue
        try:
            file = inside_root(root, cfg.pattern.format(video_id=vid), where)
            info = probe_file(file, where)
            segs = _segments(rec, where, info.duration, info.fps)
        except BadRecord as e:
            settle("activitynet_json", e.where, e.why, cfg.on_error, skipped)
            continue
        parts[part].append({"id": vid, "file": file, "info": info, "segments": segs})
    if not parts["train"] or not parts["test"]:
        raise DataError(f"activitynet_json: {path}: {len(parts['train'])} train and "
                        f"{len(parts['test'])} test videos left ({len(skipped)} skipped); need both "
                        f"(subsets: train {cfg.train_subsets}, test {cfg.test_subsets})")
    classes = sorted({s["label"] for rows in parts.values() for r in rows for s in r["segments"]})
    y = {c: i for i, c in enumerate(classes)}
    train = parts["train"]
    tr_idx, val_idx = carve_val(list(range(len(train))), cfg.val_fraction, seed)  # one video per item
    train, val = [train[i] for i in tr_idx], [train[i] for i in val_idx]

    def make(rows: list[dict]) -> Callable[[int], Sample]:
        def load(i: int) -> Sample:
            row = rows[i]
            info = row["info"]
            sps = info.duration / cfg.num_steps
            idx = np.array([time_to_index(info, (k + 0.5) * sps) for k in range(cfg.num_steps)])
            video = read_clip(row["file"], idx, info, cfg.size)  # (num_steps, 3, S, S)
            segs = [{"label": y[s["label"]], "action": s["label"], "start": s["start"], "end": s["end"]}
                    for s in row["segments"]]
            return Sample(id=row["id"], media=video, label=None,
                          meta={"segments": segs, "seconds_per_step": sps, "path": str(row["file"])})
        return load

    return DataSplits(
        train=SampleDataset(len(train), make(train)),
        test=SampleDataset(len(parts["test"]), make(parts["test"])),
        val=SampleDataset(len(val), make(val)) if val else None,
        classnames=classes, texts=[c.replace("_", " ") for c in classes],
        image_size=cfg.size, channels=3, skipped=skipped,
    )
