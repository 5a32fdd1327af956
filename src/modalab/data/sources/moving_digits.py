"""Moving digits: real video files of scikit-learn handwritten digits performing actions.

A digit (one of sklearn's 1,797 8x8 scans, upsampled, coloured) sits on a dark textured canvas and
performs one of eight actions: move left / right / up / down, rotate, zoom in, zoom out, flash.
Frames are encoded through PyAV (H.264 in .mp4 by default), so the files exercise the real
decoding path.

- ``make_clips``: short clips, one action each (action recognition); label = action index.
- ``make_long_videos``: longer videos with several action segments separated by idle stretches
  (the digit holds still); each segment has exact start/end frames and seconds (localisation).

Both are deterministic by seed and return a manifest, a list of dicts with ``path``, ``label``
(None for long videos), ``segments`` ([{label, action, start, end, start_frame, end_frame}],
end exclusive, seconds = frame / fps), ``num_frames`` and ``fps``; it is also written as JSON lines
to ``clips.jsonl`` / ``long_videos.jsonl`` in ``out_dir``.

The registered source ``moving_digits`` writes clips once into ``cache_dir`` (always generation
seed 0, so every run shares the files), splits them by the run seed, and yields samples whose
``image`` is the sampled video (T, 3, S, S), normalised; ``sampling`` picks the frame strategy
(training draws fresh TSN offsets each time; evaluation is deterministic).
``moving_digits_long`` writes equal-length long videos the same way and yields the whole video
(every ``frame_stride``-th frame) with ``meta["segments"]`` (seconds) for localisation.
``keep_decoded`` decodes each file once and keeps its frames in memory (the files are tiny).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from modalab.config import DataBase
from modalab.registry import register
from modalab.video import sampling
from modalab.video.decode import read_all, read_frames, write_video

if TYPE_CHECKING:
    import torch

    from modalab.data.dataset import DataSplits

ACTIONS: tuple[str, ...] = (
    "move_left", "move_right", "move_up", "move_down", "rotate", "zoom_in", "zoom_out", "flash",
)
PHRASES: tuple[str, ...] = tuple(f"a digit that {a}" for a in (
    "moves left", "moves right", "moves up", "moves down", "rotates", "zooms in", "zooms out",
    "flashes",
))


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)  # (N, 8, 8), (N,)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Dark static texture: (S, S, 3) float32 in [0, 1]."""
    base = rng.uniform(0.05, 0.2, size=3).astype(np.float32)
    noise = rng.normal(0.0, 0.03, size=(size // 4, size // 4, 3)).astype(np.float32)
    noise = np.kron(noise, np.ones((4, 4, 1), np.float32))  # blocky, compresses well
    return np.clip(base + noise, 0.0, 1.0)


def _render(
    glyph: np.ndarray, bg: np.ndarray, color: np.ndarray,
    cx: float, cy: float, angle: float, scale: float, bright: float,
) -> np.ndarray:
    """Paste ``glyph`` (8x8 in [0, 1]) centred at (cx, cy): (S, S, 3) uint8."""
    size = bg.shape[0]
    px = max(2, int(round(size * 0.3 * scale)))
    img = Image.fromarray((glyph * 255).astype(np.uint8)).resize((px, px), Image.BILINEAR)
    if angle:
        img = img.rotate(angle, resample=Image.BILINEAR, expand=True)
    alpha = np.asarray(img, dtype=np.float32) / 255.0  # (h, w)
    h, w = alpha.shape
    canvas = np.zeros((size, size), np.float32)
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    xs, ys = max(x0, 0), max(y0, 0)
    xe, ye = min(x0 + w, size), min(y0 + h, size)
    if xe > xs and ye > ys:
        canvas[ys:ye, xs:xe] = alpha[ys - y0 : ye - y0, xs - x0 : xe - x0]
    a = (canvas * bright)[..., None]  # (S, S, 1)
    frame = bg * (1 - a) + color[None, None, :] * a
    return (np.clip(frame, 0, 1) * 255).round().astype(np.uint8)


def _trajectory(action: str, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Per-frame state (n, 5): cx, cy, angle, scale, brightness."""
    s = np.linspace(0.0, 1.0, n)
    c = size / 2
    state = np.zeros((n, 5))
    state[:, 0:2] = c + rng.uniform(-0.08, 0.08, size=2) * size
    state[:, 3], state[:, 4] = 1.0, 1.0
    dist = size * rng.uniform(0.3, 0.45)
    if action in ("move_left", "move_right", "move_up", "move_down"):
        axis = 0 if action in ("move_left", "move_right") else 1
        sign = -1.0 if action in ("move_left", "move_up") else 1.0
        state[:, axis] = c - sign * dist / 2 + sign * dist * s
    elif action == "rotate":
        state[:, 2] = rng.choice([-1.0, 1.0]) * rng.uniform(150, 210) * s
    elif action == "zoom_in":
        state[:, 3] = 0.55 + 0.85 * s
    elif action == "zoom_out":
        state[:, 3] = 1.4 - 0.85 * s
    elif action == "flash":
        period = int(rng.integers(2, 4))
        state[:, 4] = np.where((np.arange(n) // period) % 2 == 0, 1.0, 0.15)
    else:
        raise ValueError(f"unknown action '{action}'; known actions: {', '.join(ACTIONS)}")
    return state


def _video_parts(
    rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    images, labels = _digits()
    j = int(rng.integers(len(images)))
    color = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    return images[j], _background(size, rng), color, int(labels[j])


def render_action(action: str, num_frames: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """One clip of ``action``: (T, S, S, 3) uint8."""
    rng = np.random.default_rng(seed)
    glyph, bg, color, _ = _video_parts(rng, size)
    traj = _trajectory(action, num_frames, size, rng)
    return np.stack([_render(glyph, bg, color, *st) for st in traj])


def _write_manifest(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def make_clips(
    out_dir: str | Path, num_clips: int, num_frames: int = 16, size: int = 64, fps: int = 8,
    seed: int = 0, codec: str = "libx264", suffix: str = ".mp4",
) -> list[dict]:
    """``num_clips`` single-action clips, labels cycling through ACTIONS in a seeded order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = np.resize(np.arange(len(ACTIONS)), num_clips)
    rng.shuffle(labels)
    rows = []
    for i, y in enumerate(labels.tolist()):
        frames = render_action(ACTIONS[y], num_frames, size, seed=int(rng.integers(2**31)))
        path = write_video(out / f"clip_{i:05d}{suffix}", frames, fps=fps, codec=codec)
        seg = {"label": y, "action": ACTIONS[y], "start": 0.0, "end": num_frames / fps,
               "start_frame": 0, "end_frame": num_frames}
        rows.append({"path": str(path), "label": y, "segments": [seg],
                     "num_frames": num_frames, "fps": fps})
    _write_manifest(out / "clips.jsonl", rows)
    return rows


def make_long_videos(
    out_dir: str | Path, num_videos: int, num_segments: tuple[int, int] = (2, 4),
    action_len: tuple[int, int] = (12, 24), gap_len: tuple[int, int] = (4, 16),
    size: int = 64, fps: int = 8, seed: int = 0, codec: str = "libx264", suffix: str = ".mp4",
    total_frames: int | None = None,
) -> list[dict]:
    """Videos of idle gaps and action segments: gap, action, gap, action, ..., gap.

    Segment lengths are drawn uniformly from the inclusive ranges ``action_len`` / ``gap_len``
    (frames); the number of actions from ``num_segments``. During a gap the digit holds the last
    pose (or a neutral one at the start). With ``total_frames`` every video has exactly that many
    frames: actions that would not fit (with a final gap of at least ``gap_len[0]``) are dropped
    and the final gap fills the rest.
    """
    if total_frames is not None and total_frames < 2 * gap_len[0] + action_len[1]:
        raise ValueError(
            f"make_long_videos: total_frames={total_frames} cannot hold one action of up to "
            f"{action_len[1]} frames between gaps of {gap_len[0]}; raise total_frames"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(num_videos):
        glyph, bg, color, _ = _video_parts(rng, size)
        still = np.array([[size / 2, size / 2, 0.0, 1.0, 1.0]])
        states, segments = [], []
        t = 0
        for _ in range(int(rng.integers(num_segments[0], num_segments[1] + 1))):
            gap = int(rng.integers(gap_len[0], gap_len[1] + 1))
            y = int(rng.integers(len(ACTIONS)))
            n = int(rng.integers(action_len[0], action_len[1] + 1))
            if total_frames is not None and t + gap + n + gap_len[0] > total_frames:
                if segments:
                    break
                gap = total_frames - n - gap_len[0]  # the first action always fits
            states.append(np.repeat(still, gap, axis=0))
            t += gap
            traj = _trajectory(ACTIONS[y], n, size, rng)
            states.append(traj)
            segments.append({"label": y, "action": ACTIONS[y], "start": t / fps,
                             "end": (t + n) / fps, "start_frame": t, "end_frame": t + n})
            t += n
            still = traj[-1:].copy()
            still[:, 4] = 1.0
        gap = int(rng.integers(gap_len[0], gap_len[1] + 1))
        if total_frames is not None:
            gap = total_frames - t
        states.append(np.repeat(still, gap, axis=0))
        traj = np.concatenate(states)  # (T, 5)
        frames = np.stack([_render(glyph, bg, color, *st) for st in traj])
        path = write_video(out / f"long_{v:05d}{suffix}", frames, fps=fps, codec=codec)
        rows.append({"path": str(path), "label": None, "segments": segments,
                     "num_frames": len(traj), "fps": fps})
    _write_manifest(out / "long_videos.jsonl", rows)
    return rows


# -------------------------------------------------------------------- registered data sources


class MovingDigitsConfig(DataBase):
    cache_dir: str = "runs/cache/moving_digits"
    num_clips: int = Field(256, gt=0)
    num_frames: int = Field(16, gt=0, description="frames written per clip")
    size: int = Field(64, ge=16, description="canvas height = width (even)")
    fps: int = Field(8, gt=0)
    frames_per_clip: int = Field(8, gt=0, description="frames the model sees")
    sampling: Literal["uniform", "tsn", "motion_adaptive", "fps"] = "tsn"
    sample_rate: float = Field(4.0, gt=0, description="frames per second for sampling='fps'")
    test_fraction: float = Field(0.25, gt=0, lt=1)
    keep_decoded: bool = Field(
        False, description="decode each file fully once and keep the frames in memory "
        "(tiny clips: the run measures sampling and modelling, not decoding)",
    )


class _Frames:
    """Reads frames of a file: sparse seek-decoding, or from an in-memory full decode."""

    def __init__(self, keep_decoded: bool) -> None:
        self.keep = keep_decoded
        self._cache: dict[str, np.ndarray] = {}

    def all(self, path: str) -> np.ndarray:
        if not self.keep:
            return read_all(path)
        if path not in self._cache:
            self._cache[path] = read_all(path)  # (T, S, S, 3) uint8
        return self._cache[path]

    def read(self, path: str, idx: np.ndarray) -> np.ndarray:
        return self.all(path)[idx] if self.keep else read_frames(path, idx)


def _sample_indices(
    cfg: MovingDigitsConfig, path: str, train: bool, seed: int, frames: _Frames
) -> np.ndarray:
    if cfg.sampling == "uniform":
        return sampling.uniform(cfg.num_frames, cfg.frames_per_clip).indices
    if cfg.sampling == "tsn":
        return sampling.tsn(cfg.num_frames, cfg.frames_per_clip, train=train, seed=seed).indices
    if cfg.sampling == "fps":
        idx = sampling.fps(cfg.num_frames, cfg.fps, cfg.sample_rate).indices
        return idx[sampling.uniform(len(idx), cfg.frames_per_clip).indices]
    return sampling.motion_adaptive(frames.all(path), cfg.frames_per_clip).indices


def _to_video(frames: np.ndarray) -> "torch.Tensor":
    """(T, S, S, 3) uint8 -> normalised (T, 3, S, S) float."""
    import torch

    from modalab.data.transforms import normalize

    x = torch.from_numpy(np.ascontiguousarray(frames))
    return normalize(x.permute(0, 3, 1, 2).float() / 255.0)  # (T, 3, S, S)


def _read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@register("source", "moving_digits", schema=MovingDigitsConfig)
def build_moving_digits(cfg: MovingDigitsConfig, *, seed: int) -> DataSplits:
    """Action clips of moving sklearn digits (H.264 files); Sample.media = (T, 3, S, S)."""
    import torch

    from modalab.data.dataset import DataSplits, SampleDataset, carve_val, stratified_split
    from modalab.data.sample import Sample

    out = Path(cfg.cache_dir) / f"clips_n{cfg.num_clips}_t{cfg.num_frames}_s{cfg.size}_f{cfg.fps}"
    manifest = out / "clips.jsonl"
    if manifest.is_file():
        rows = _read_manifest(manifest)
    else:
        rows = make_clips(out, cfg.num_clips, cfg.num_frames, cfg.size, cfg.fps, seed=0)
    labels = [r["label"] for r in rows]
    train_idx, test_idx = stratified_split(labels, len(rows), cfg.test_fraction, seed)
    train_idx, val_idx = carve_val(train_idx, cfg.val_fraction, seed, labels=labels)  # one video per item
    frames = _Frames(cfg.keep_decoded)

    def make(split: list[int], train: bool) -> Callable[[int], Sample]:
        def load(i: int) -> Sample:
            row = rows[split[i]]
            # training offsets come from torch's RNG (seeded per run / worker), like digits.py
            s = int(torch.randint(2**31 - 1, ())) if train else split[i]
            idx = _sample_indices(cfg, row["path"], train, s, frames)
            video = _to_video(frames.read(row["path"], idx))  # (T, 3, S, S)
            return Sample(id=row["path"], media=video, text=PHRASES[row["label"]],
                          label=row["label"], meta={"frames": idx.tolist()})
        return load

    return DataSplits(
        train=SampleDataset(len(train_idx), make(train_idx, True)),
        test=SampleDataset(len(test_idx), make(test_idx, False)),
        val=SampleDataset(len(val_idx), make(val_idx, False)) if val_idx else None,
        classnames=list(ACTIONS),
        texts=list(PHRASES),
        image_size=cfg.size,
        channels=3,
    )


class MovingDigitsLongConfig(DataBase):
    cache_dir: str = "runs/cache/moving_digits"
    num_videos: int = Field(96, gt=1)
    total_frames: int = Field(96, gt=0, description="frames per video (all videos equal)")
    num_segments: tuple[int, int] = (2, 4)
    action_len: tuple[int, int] = (12, 24)
    gap_len: tuple[int, int] = (4, 12)
    size: int = Field(32, ge=16, description="canvas height = width (even)")
    fps: int = Field(8, gt=0)
    frame_stride: int = Field(1, gt=0, description="model time step = every k-th frame")
    test_fraction: float = Field(0.25, gt=0, lt=1)
    keep_decoded: bool = True


@register("source", "moving_digits_long", schema=MovingDigitsLongConfig)
def build_moving_digits_long(cfg: MovingDigitsLongConfig, *, seed: int) -> DataSplits:
    """Long moving-digit videos with several action segments; Sample.meta['segments'] in seconds."""
    from modalab.data.dataset import DataSplits, SampleDataset, carve_val, stratified_split
    from modalab.data.sample import Sample

    key = (f"long_n{cfg.num_videos}_t{cfg.total_frames}_s{cfg.size}_f{cfg.fps}_k"
           f"{cfg.num_segments[0]}-{cfg.num_segments[1]}_a{cfg.action_len[0]}-{cfg.action_len[1]}"
           f"_g{cfg.gap_len[0]}-{cfg.gap_len[1]}")
    out = Path(cfg.cache_dir) / key
    manifest = out / "long_videos.jsonl"
    if manifest.is_file():
        rows = _read_manifest(manifest)
    else:
        rows = make_long_videos(out, cfg.num_videos, cfg.num_segments, cfg.action_len,
                                cfg.gap_len, cfg.size, cfg.fps, seed=0,
                                total_frames=cfg.total_frames)
    train_idx, test_idx = stratified_split(None, len(rows), cfg.test_fraction, seed)
    train_idx, val_idx = carve_val(train_idx, cfg.val_fraction, seed)  # one video per item
    frames = _Frames(cfg.keep_decoded)
    idx = np.arange(0, cfg.total_frames, cfg.frame_stride)

    def make(split: list[int]) -> Callable[[int], Sample]:
        def load(i: int) -> Sample:
            row = rows[split[i]]
            video = _to_video(frames.read(row["path"], idx))  # (T', 3, S, S)
            return Sample(id=row["path"], media=video, label=None, meta={
                "segments": row["segments"], "seconds_per_step": cfg.frame_stride / cfg.fps,
            })
        return load

    return DataSplits(
        train=SampleDataset(len(train_idx), make(train_idx)),
        test=SampleDataset(len(test_idx), make(test_idx)),
        val=SampleDataset(len(val_idx), make(val_idx)) if val_idx else None,
        classnames=list(ACTIONS),
        texts=list(PHRASES),
        image_size=cfg.size,
        channels=3,
    )
