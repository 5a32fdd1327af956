"""MSR-VTT-style video-caption pairs: one JSON with ``videos`` and ``sentences``.

    {"videos": [{"video_id": "video0", "split": "train", ...}, ...],
     "sentences": [{"video_id": "video0", "caption": "a 3 moves left, then zooms in"}, ...]}

This is the layout of MSR-VTT's ``train_val_videodatainfo.json`` / ``test_videodatainfo.json``;
each video has several captions. The file is ``pattern`` filled with ``video_id`` under ``root``
(kept inside it). ``split`` picks train (``train_splits``), validation (``val_splits``; if none,
carved from train by ``val_fraction``) and test (``test_splits``).

A sample is one video (``frames_per_clip`` frames over the whole clip, uniform or TSN) with one
caption in ``text``: a random one of its captions in training (torch's RNG, seeded per run), the
first one in evaluation; ``meta["captions"]`` holds all of them and ``meta["record"]`` the video's
JSON record. A video with no caption, a missing or unreadable file, or a sentence naming an unknown
video stops the run naming the record (``on_error: error``) or is skipped and counted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
from pydantic import Field

from modalab.config import DataBase
from modalab.registry import register

if TYPE_CHECKING:
    from modalab.data.dataset import DataSplits


class MsrvttJsonConfig(DataBase):
    path: str = Field(..., description="the JSON with 'videos' and 'sentences'")
    root: str | None = Field(None, description="folder holding the videos (default: the JSON's folder)")
    pattern: str = Field("{video_id}.mp4", description="file name from video_id")
    train_splits: list[str] = Field(default_factory=lambda: ["train"])
    val_splits: list[str] = Field(default_factory=lambda: ["validate", "val"])
    test_splits: list[str] = Field(default_factory=lambda: ["test"])
    frames_per_clip: int = Field(8, gt=0)
    sampling: Literal["uniform", "tsn"] = "uniform"
    size: int = Field(32, ge=8, description="frames are resized to size x size")


def read_videodatainfo(path: Path, on_error: str, skipped: list[str]) -> tuple[list[dict], dict[str, list[str]]]:
    """The video records and captions by video id; bad entries raise or are counted."""
    from modalab.data.dataset import DataError
    from modalab.data.sources.video_files import settle

    if not path.is_file():
        raise DataError(f"msrvtt_json: {path}: no such annotation file")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        videos, sentences = raw["videos"], raw["sentences"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"msrvtt_json: {path}: expected JSON with 'videos' and 'sentences' lists "
                        f"({type(e).__name__}: {e})") from e
    known = {v.get("video_id") for v in videos if isinstance(v, dict)}
    captions: dict[str, list[str]] = {}
    for k, s in enumerate(sentences):
        where = f"{path}:sentences[{k}]"
        vid = s.get("video_id") if isinstance(s, dict) else None
        cap = s.get("caption") if isinstance(s, dict) else None
        if vid not in known or not isinstance(cap, str) or not cap.strip():
            settle("msrvtt_json", where, f"needs a known 'video_id' and a non-empty 'caption', got {s!r}",
                   on_error, skipped)
            continue
        captions.setdefault(vid, []).append(cap.strip())
    return videos, captions


@register("source", "msrvtt_json", schema=MsrvttJsonConfig)
def build_msrvtt_json(cfg: MsrvttJsonConfig, *, seed: int) -> "DataSplits":
    """Videos with several captions each; Sample.media = (T, 3, S, S), Sample.text = one caption."""
    import torch

    from modalab.data.dataset import DataError, DataSplits, SampleDataset, carve_val
    from modalab.data.sample import Sample
    from modalab.data.sources.video_files import (
        BadRecord, inside_root, probe_file, read_clip, sample_window, settle,
    )

    path = Path(cfg.path)
    root = Path(cfg.root) if cfg.root else path.parent
    skipped: list[str] = []
    videos, captions = read_videodatainfo(path, cfg.on_error, skipped)
    parts: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for k, rec in enumerate(videos):
        vid = rec.get("video_id") if isinstance(rec, dict) else None
        where = f"{path}:videos[{k}]" + (f" ({vid})" if vid else "")
        split = rec.get("split") if isinstance(rec, dict) else None
        part = ("train" if split in cfg.train_splits else "val" if split in cfg.val_splits
                else "test" if split in cfg.test_splits else None)
        if part is None:
            continue
        try:
            if not isinstance(vid, str) or not vid:
                raise BadRecord(where, "needs a 'video_id'")
            if not captions.get(vid):
                raise BadRecord(where, "has no caption in 'sentences'")
            file = inside_root(root, cfg.pattern.format(video_id=vid), where)
            info = probe_file(file, where)
        except BadRecord as e:
            settle("msrvtt_json", e.where, e.why, cfg.on_error, skipped)
            continue
        parts[part].append({"id": vid, "file": file, "info": info, "captions": captions[vid], "record": rec})
    if not parts["train"] or not parts["test"]:
        raise DataError(f"msrvtt_json: {path}: {len(parts['train'])} train and {len(parts['test'])} "
                        f"test videos left ({len(skipped)} skipped); need both (splits: train "
                        f"{cfg.train_splits}, test {cfg.test_splits})")
    train, val = parts["train"], parts["val"]
    if not val:
        tr_idx, val_idx = carve_val(list(range(len(train))), cfg.val_fraction, seed)
        train, val = [train[i] for i in tr_idx], [train[i] for i in val_idx]

    def make(rows: list[dict], is_train: bool) -> Callable[[int], Sample]:
        def load(i: int) -> Sample:
            row = rows[i]
            s = int(torch.randint(2**31 - 1, ())) if is_train else i
            idx = sample_window(0, row["info"].num_frames, cfg.frames_per_clip, cfg.sampling, is_train, s)
            video = read_clip(row["file"], idx, row["info"], cfg.size)  # (T, 3, S, S)
            caps = row["captions"]
            text = caps[int(torch.randint(len(caps), ()))] if is_train else caps[0]
            return Sample(id=row["id"], media=video, text=text, label=None,
                          meta={"captions": caps, "record": row["record"],
                                "frames": np.asarray(idx).tolist()})
        return load

    return DataSplits(
        train=SampleDataset(len(train), make(train, True)),
        test=SampleDataset(len(parts["test"]), make(parts["test"], False)),
        val=SampleDataset(len(val), make(val, False)) if val else None,
        classnames=None, texts=sorted({c for rows in (train, val) for r in rows for c in r["captions"]}),
        image_size=cfg.size, channels=3, skipped=skipped,
    )
