"""Shared pieces of the annotation-driven video readers (``kinetics_csv``, ``activitynet_json``,
``msrvtt_json``): paths kept inside the declared root, a probe of every file with an error naming
the annotation record (or a counted skip), frame indices inside a time window, and one clip read
through the seek reader (``video/decode.py``) and resized.

Conventions follow ``video_folder.py``: ``on_error: error`` stops at the first bad record with a
message naming the annotation file, the record and the video file; ``on_error: skip`` drops it and
adds ``"<annotation>:<record>: <why>"`` to ``DataSplits.skipped``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from modalab.data.dataset import DataError
from modalab.video import sampling
from modalab.video.decode import VideoError, VideoInfo, probe, read_frames, time_to_index  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import torch


class BadRecord(Exception):
    """One annotation record that cannot be used; ``where`` names the file and record."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")
        self.where, self.why = where, why


def inside_root(root: Path, rel: str, where: str) -> Path:
    """``root / rel`` resolved; a path that leaves ``root`` (``..``, absolute) is a bad record."""
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()):
        raise BadRecord(where, f"video path {rel!r} points outside the root {root}")
    return target


def settle(reader: str, where: str, why: str, on_error: str, skipped: list[str]) -> None:
    """Raise a DataError naming ``where`` (on_error=error) or count the record as skipped."""
    if on_error == "error":
        raise DataError(f"{reader}: {where}: {why} (set data.on_error: skip to skip and count "
                        "bad records)")
    skipped.append(f"{where}: {why}")


def probe_file(path: Path, where: str) -> VideoInfo:
    """``probe(path)``; a missing or unreadable video is a BadRecord naming ``where`` and the file."""
    try:
        return probe(path)
    except VideoError as e:
        raise BadRecord(where, str(e)) from e


def window(info: VideoInfo, start: float | None, end: float | None, where: str) -> tuple[int, int]:
    """First and one-past-last frame index whose timestamps lie in [start, end) seconds.

    ``None`` means the start / end of the file. A window holding no frame is a BadRecord.
    """
    if start is None and end is None:
        return 0, info.num_frames
    s = 0.0 if start is None else float(start)
    e = info.duration if end is None else float(end)
    if not e > s:
        raise BadRecord(where, f"time window [{s}, {e}) s is empty (end must be after start)")
    if s >= info.duration:
        raise BadRecord(where, f"time window starts at {s} s, after the video's end "
                               f"({info.duration:.3f} s, {info.path})")
    first = time_to_index(info, s)
    if float((info.pts[first] - info.pts[0]) * info.time_base) < s - 1e-6:
        first += 1  # the frame on screen at s started before s: the window begins at the next one
    last = time_to_index(info, e - 1e-6) + 1
    if last <= first:
        raise BadRecord(where, f"no frame of {info.path} lies in [{s}, {e}) s")
    return first, last


def sample_window(first: int, last: int, n: int, how: Literal["uniform", "tsn"], train: bool,
                  seed: int) -> np.ndarray:
    """``n`` sorted frame indices in [first, last) by uniform or TSN segment sampling."""
    count = last - first
    if how == "tsn":
        idx = sampling.tsn(count, n, train=train, seed=seed).indices
    else:
        idx = sampling.uniform(count, n).indices
    return first + np.asarray(idx, dtype=np.int64)


def read_clip(path: Path, indices: np.ndarray, info: VideoInfo, size: int) -> "torch.Tensor":
    """Frames ``indices`` of ``path`` (seek reader), normalised and resized: (T, 3, size, size)."""
    import torch.nn.functional as F

    from modalab.data.sources.moving_digits import _to_video

    video = _to_video(read_frames(path, indices, info=info))  # (T, 3, H, W)
    if video.shape[-2:] != (size, size):
        video = F.interpolate(video, size=(size, size), mode="bilinear",
                              align_corners=False)  # (T, 3, S, S)
    return video
