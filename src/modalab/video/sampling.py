"""Frame sampling strategies: which frames of a video a model sees.

Every strategy returns a ``FrameSample``: frame indices (valid, in [0, num_frames)) and their
timestamps in seconds. Indices are sorted within each clip (``clips > 1`` only for ``dense``) and
clips are ordered by start. Randomness comes only from ``seed`` (an int or a numpy Generator),
so the same seed gives the same frames.

Videos shorter than the request are handled, never an error: ``uniform``, ``fps`` and
``motion_adaptive`` repeat frames (indices stay sorted, some appear twice), and the clip samplers
(``tsn``, ``dense``) follow mmaction2's ``SampleFrames`` with ``out_of_bound_opt='repeat_last'``:
positions past the end repeat the clip's last valid frame.

| strategy | definition |
|---|---|
| uniform(n) | centres of n equal segments: floor((k + 0.5) * N / n) |
| tsn(n) | mmaction2 SampleFrames(clip_len=1, num_clips=n): train = random offset per segment, eval = segment centre |
| dense(clip_len, frame_interval, num_clips) | SampleFrames with clip_len > 1 (SlowFast test: 32 x 2, 10 clips) |
| fps(rate) | one frame every 1/rate seconds: floor(k * video_fps / rate) |
| keyframes() | the stream's keyframes (from ``decode.probe``), decodable without reference frames |
| scene_change(threshold, min_scene_len) | first frame of each scene found by a PySceneDetect ContentDetector |
| motion_adaptive(n) | inverse-CDF sampling of per-frame motion: more frames where frames differ more |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from modalab.video.decode import VideoInfo, frame_times


@dataclass(frozen=True)
class FrameSample:
    """Sampled frames. ``indices`` and ``timestamps`` are (K,), K = clips * frames_per_clip."""

    indices: np.ndarray  # (K,) int64
    timestamps: np.ndarray  # (K,) float64 seconds
    clips: int = 1

    def per_clip(self) -> np.ndarray:
        """Indices as (clips, K // clips)."""
        return self.indices.reshape(self.clips, -1)


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _make(indices: np.ndarray, video_fps: float, clips: int = 1) -> FrameSample:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    return FrameSample(idx, idx.astype(np.float64) / float(video_fps), clips)


def _check(num_frames: int, **positive: int | float) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    for name, value in positive.items():
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def uniform(num_frames: int, n: int, video_fps: float = 1.0) -> FrameSample:
    """n frames at the centres of n equal segments; repeats frames when num_frames < n."""
    _check(num_frames, n=n, video_fps=video_fps)
    k = np.arange(n, dtype=np.float64)
    return _make(np.floor((k + 0.5) * num_frames / n), video_fps)


def sample_clips(
    num_frames: int,
    clip_len: int,
    frame_interval: int = 1,
    num_clips: int = 1,
    train: bool = False,
    seed: int | np.random.Generator | None = 0,
    video_fps: float = 1.0,
) -> FrameSample:
    """mmaction2 ``SampleFrames`` (out_of_bound_opt='repeat_last').

    Clip offsets: train -> segment k starts at k * avg with a random offset in [0, avg), avg =
    (N - clip_len * frame_interval + 1) // num_clips (with the library's fallbacks for short
    videos); eval -> offset at the segment centre, avg = (N - clip_len * frame_interval + 1) /
    num_clips. Each clip then takes clip_len frames spaced frame_interval apart.
    """
    _check(num_frames, clip_len=clip_len, frame_interval=frame_interval, num_clips=num_clips)
    ori_clip_len = clip_len * frame_interval
    if train:
        rng = _rng(seed)
        avg = (num_frames - ori_clip_len + 1) // num_clips
        if avg > 0:
            offsets = np.arange(num_clips) * avg + rng.integers(avg, size=num_clips)
        elif num_frames > max(num_clips, ori_clip_len):
            offsets = np.sort(rng.integers(num_frames - ori_clip_len + 1, size=num_clips))
        elif avg == 0:
            ratio = (num_frames - ori_clip_len + 1.0) / num_clips
            offsets = np.around(np.arange(num_clips) * ratio)
        else:
            offsets = np.zeros(num_clips)
    else:
        avg_f = (num_frames - ori_clip_len + 1) / float(num_clips)
        if num_frames > ori_clip_len - 1:
            offsets = (np.arange(num_clips) * avg_f + avg_f / 2.0).astype(np.int64)
        else:
            offsets = np.zeros(num_clips)
    offsets = np.asarray(offsets, dtype=np.int64)
    inds = offsets[:, None] + np.arange(clip_len)[None, :] * frame_interval  # (clips, clip_len)
    safe = inds < num_frames
    last_valid = np.max(np.where(safe, inds, 0), axis=1, keepdims=True)  # (clips, 1)
    inds = np.where(safe, inds, last_valid)
    return _make(inds, video_fps, clips=num_clips)


def tsn(
    num_frames: int,
    n: int,
    train: bool = True,
    seed: int | np.random.Generator | None = 0,
    video_fps: float = 1.0,
) -> FrameSample:
    """TSN: one frame per segment, random within it in training, its centre at evaluation."""
    return sample_clips(num_frames, 1, 1, n, train=train, seed=seed, video_fps=video_fps)


def dense(
    num_frames: int,
    clip_len: int = 32,
    frame_interval: int = 2,
    num_clips: int = 10,
    train: bool = False,
    seed: int | np.random.Generator | None = 0,
    video_fps: float = 1.0,
) -> FrameSample:
    """Dense clips (SlowFast / I3D): num_clips clips of clip_len frames, frame_interval apart."""
    return sample_clips(
        num_frames, clip_len, frame_interval, num_clips, train=train, seed=seed, video_fps=video_fps
    )


def fps(
    num_frames: int, video_fps: float, rate: float, max_frames: int | None = None
) -> FrameSample:
    """One frame every 1/rate seconds from t=0: index floor(k * video_fps / rate).

    A rate above video_fps repeats frames. With ``max_frames`` the grid is thinned uniformly.
    """
    _check(num_frames, video_fps=video_fps, rate=rate)
    duration = num_frames / video_fps
    count = max(1, int(np.ceil(duration * rate - 1e-9)))
    idx = np.floor(np.arange(count) * video_fps / rate + 1e-9).astype(np.int64)
    idx = np.minimum(idx, num_frames - 1)
    if max_frames is not None and count > max_frames:
        idx = idx[uniform(count, max_frames).indices]
    return _make(idx, video_fps)


def keyframes(info: VideoInfo, max_frames: int | None = None) -> FrameSample:
    """The stream's keyframes (cheapest frames to decode); thinned uniformly to ``max_frames``."""
    idx = np.asarray(info.keyframes, dtype=np.int64)
    if max_frames is not None and len(idx) > max_frames:
        idx = idx[uniform(len(idx), max_frames).indices]
    return FrameSample(idx, frame_times(info, idx))


# ----------------------------------------------------------------------------- content-based


def rgb_to_hsv_cv(frames: np.ndarray) -> np.ndarray:
    """OpenCV-convention HSV of uint8 RGB frames: H in [0, 180), S and V in [0, 255].

    (..., 3) uint8 -> (..., 3) float64, rounded like OpenCV's ``COLOR_BGR2HSV``.
    """
    x = frames.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = x.max(-1)
    c = v - x.min(-1)
    s = np.where(v > 0, 255.0 * c / np.maximum(v, 1e-12), 0.0)
    safe_c = np.maximum(c, 1e-12)
    h = np.where(
        v == r, 60.0 * (g - b) / safe_c,
        np.where(v == g, 120.0 + 60.0 * (b - r) / safe_c, 240.0 + 60.0 * (r - g) / safe_c),
    )
    h = np.where(c == 0, 0.0, h)
    h = np.where(h < 0, h + 360.0, h)
    return np.stack([np.round(h / 2.0) % 180, np.round(s), v], axis=-1)


def content_scores(
    frames: np.ndarray, weights: tuple[float, float, float] = (1, 1, 1)
) -> np.ndarray:
    """ContentDetector score per frame: weighted mean of mean |delta| of H, S, V to the previous
    frame (frame 0 scores 0). frames: (T, H, W, 3) uint8 RGB -> (T,) float64."""
    hsv = rgb_to_hsv_cv(frames)  # (T, H, W, 3)
    deltas = np.abs(np.diff(hsv, axis=0)).mean(axis=(1, 2))  # (T-1, 3)
    w = np.asarray(weights, dtype=np.float64)
    scores = deltas @ w / np.abs(w).sum()
    return np.concatenate([[0.0], scores])


def detect_cuts(
    scores: np.ndarray,
    threshold: float = 27.0,
    min_scene_len: int = 15,
    mode: Literal["merge", "suppress"] = "merge",
) -> list[int]:
    """Frames where a new scene starts, from per-frame scores (PySceneDetect ``FlashFilter``).

    suppress: a frame at or above threshold is a cut if at least min_scene_len frames passed
    since the last cut (the first frame counts as one). merge (the library default): cuts closer
    than min_scene_len are merged, the merged run emitting its last frame above threshold.
    """
    cuts: list[int] = []
    last_above = 0
    merge_enabled, merge_triggered, merge_start = False, False, 0
    for f, score in enumerate(scores):
        above = score >= threshold
        met = f - last_above >= min_scene_len
        if mode == "suppress":
            if above and met:
                last_above = f
                cuts.append(f)
            continue
        if above:
            last_above = f
        if merge_triggered:
            if met and not above and last_above - merge_start >= min_scene_len:
                merge_triggered = False
                cuts.append(last_above)
            continue
        if not above:
            continue
        if met:
            merge_enabled = True
            cuts.append(f)
        elif merge_enabled:
            merge_triggered, merge_start = True, f
    return cuts


def scene_change(
    frames: np.ndarray,
    video_fps: float = 1.0,
    threshold: float = 27.0,
    min_scene_len: int = 15,
    mode: Literal["merge", "suppress"] = "merge",
) -> FrameSample:
    """First frame of every scene (frame 0 and each detected cut). frames: (T, H, W, 3) uint8."""
    cuts = detect_cuts(content_scores(frames), threshold, min_scene_len, mode)
    return _make(np.array([0] + cuts), video_fps)


def motion_adaptive(
    frames: np.ndarray, n: int, video_fps: float = 1.0, uniform_mix: float = 0.1
) -> FrameSample:
    """n frames placed by the motion distribution: more where consecutive frames differ more.

    Motion m_t = mean |gray_t - gray_{t-1}| (m_0 = m_1). The density mixes the normalised motion
    with ``uniform_mix`` of a uniform density (so static stretches keep some frames); index k is
    the frame where the cumulative density first reaches (k + 0.5) / n. Deterministic.
    frames: (T, H, W, 3) uint8.
    """
    t = len(frames)
    _check(t, n=n)
    gray = frames.astype(np.float64).mean(-1)  # (T, H, W)
    motion = np.abs(np.diff(gray, axis=0)).mean(axis=(1, 2))  # (T-1,)
    motion = np.concatenate([motion[:1], motion]) if t > 1 else np.ones(1)
    total = motion.sum()
    density = motion / total if total > 0 else np.full(t, 1.0 / t)
    density = (1 - uniform_mix) * density + uniform_mix / t
    cdf = np.cumsum(density)
    targets = (np.arange(n) + 0.5) / n
    idx = np.minimum(np.searchsorted(cdf, targets * cdf[-1], side="left"), t - 1)
    return _make(idx, video_fps)
