"""Long moving-digit videos whose label needs the whole video (the streaming-memory recipe).

Each video holds one action (``action_frames`` frames, one of ``moving_digits.ACTIONS``) at a
random offset; before and after it the digit rests in a neutral pose (centred, upright, scale 1,
full brightness), so the rest frames carry nothing about the label and a model must find the
action wherever it is. A model that reads only the first window misses it when it starts later;
evenly spaced frames see ~``action_frames / stride`` frames of it, too few to tell an action from
its time-reversed twin once the video is several windows long.

Videos are deterministic per index: video ``i`` has the same digit, colours, action and
trajectory at every ``num_frames`` (only the offset and the rest frames change), so test sets at
several lengths are paired. Files are H.264 written once under ``cache_dir`` (generation seed 0);
the run seed picks the split as in ``moving_digits``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from pydantic import Field, model_validator

from modalab.config import DataBase
from modalab.data.sources.moving_digits import (
    ACTIONS, PHRASES, _background, _digits, _render, _to_video, _trajectory,
)
from modalab.registry import register
from modalab.video.decode import read_all, write_video

if TYPE_CHECKING:
    from modalab.data.dataset import DataSplits


def make_stream_videos(
    out_dir: str | Path, num_videos: int, num_frames: int, action_frames: int = 8,
    size: int = 32, fps: int = 8, seed: int = 0,
) -> list[dict]:
    """``num_videos`` videos of ``num_frames`` frames, one action each: manifest rows with
    ``path``, ``label``, ``start_frame`` / ``end_frame`` (end exclusive), ``num_frames``, ``fps``;
    also written to ``stream_videos.jsonl``."""
    if not 0 < action_frames <= num_frames:
        raise ValueError(f"make_stream_videos: action_frames={action_frames} must be in "
                         f"[1, num_frames={num_frames}]")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.resize(np.arange(len(ACTIONS)), num_videos)
    np.random.default_rng(seed).shuffle(labels)
    images, _ = _digits()
    rows = []
    for i, y in enumerate(labels.tolist()):
        rng = np.random.default_rng([seed, i])  # the content of video i, the same at every length
        glyph = images[int(rng.integers(len(images)))]
        color = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
        bg = _background(size, rng)
        traj = _trajectory(ACTIONS[y], action_frames, size, rng)  # (A, 5)
        start = int(np.random.default_rng([seed, i, num_frames]).integers(num_frames - action_frames + 1))
        rest = np.array([size / 2, size / 2, 0.0, 1.0, 1.0])
        states = np.repeat(rest[None], num_frames, axis=0)  # (T, 5)
        states[start : start + action_frames] = traj
        frames = np.stack([_render(glyph, bg, color, *st) for st in states])  # (T, S, S, 3)
        path = write_video(out / f"stream_{i:05d}.mp4", frames, fps=fps)
        rows.append({"path": str(path), "label": y, "start_frame": start,
                     "end_frame": start + action_frames, "num_frames": num_frames, "fps": fps})
    with open(out / "stream_videos.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


class MovingDigitsStreamConfig(DataBase):
    cache_dir: str = "runs/cache/moving_digits"
    num_videos: int = Field(384, gt=1)
    num_frames: int = Field(16, gt=0, description="frames per video (the model reads them all)")
    action_frames: int = Field(8, gt=0, description="frames of the one action in each video")
    size: int = Field(32, ge=16, description="canvas height = width (even)")
    fps: int = Field(8, gt=0)
    test_fraction: float = Field(0.25, gt=0, lt=1)

    @model_validator(mode="after")
    def _action_fits(self) -> "MovingDigitsStreamConfig":
        if self.action_frames > self.num_frames:
            raise ValueError(f"data.action_frames={self.action_frames} exceeds data.num_frames="
                             f"{self.num_frames}; the action must fit in the video")
        return self


@register("source", "moving_digits_stream", schema=MovingDigitsStreamConfig)
def build_moving_digits_stream(cfg: MovingDigitsStreamConfig, *, seed: int) -> "DataSplits":
    """One-action long videos (action anywhere, rest elsewhere); Sample.media = (T, 3, S, S)."""
    from modalab.data.dataset import DataSplits, SampleDataset, carve_val, stratified_split
    from modalab.data.sample import Sample

    out = (Path(cfg.cache_dir) / f"stream_n{cfg.num_videos}_t{cfg.num_frames}_a{cfg.action_frames}"
           f"_s{cfg.size}_f{cfg.fps}")
    manifest = out / "stream_videos.jsonl"
    if manifest.is_file():
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    else:
        rows = make_stream_videos(out, cfg.num_videos, cfg.num_frames, cfg.action_frames,
                                  cfg.size, cfg.fps, seed=0)
    labels = [r["label"] for r in rows]
    train_idx, test_idx = stratified_split(labels, len(rows), cfg.test_fraction, seed)
    train_idx, val_idx = carve_val(train_idx, cfg.val_fraction, seed, labels=labels)
    cache: dict[str, object] = {}

    def make(split: list[int]) -> Callable[[int], Sample]:
        def load(i: int) -> Sample:
            row = rows[split[i]]
            if row["path"] not in cache:
                cache[row["path"]] = _to_video(read_all(row["path"]))  # (T, 3, S, S), tiny files
            return Sample(id=row["path"], media=cache[row["path"]], text=PHRASES[row["label"]],
                          label=row["label"], meta={"start_frame": row["start_frame"]})
        return load

    return DataSplits(
        train=SampleDataset(len(train_idx), make(train_idx)),
        test=SampleDataset(len(test_idx), make(test_idx)),
        val=SampleDataset(len(val_idx), make(val_idx)) if val_idx else None,
        classnames=list(ACTIONS), texts=list(PHRASES), image_size=cfg.size, channels=3,
    )
