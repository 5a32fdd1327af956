"""Video decoding on PyAV with keyframe seeking: read a few frames without decoding the whole file.

``probe(path)`` demuxes the video stream once (packets only, no decoding) to learn every frame's
presentation timestamp (pts) and which frames are keyframes. ``read_frames(path, indices)`` then,
for each run of nearby requested frames, seeks backward to the keyframe at or before the first
frame of the run and decodes forward only up to the last frame of the run. It never decodes past
the last requested frame, and a sparse request touches only the GOPs that hold requested frames.

Frame ``i`` is the i-th frame in presentation order (sorted pts), counted from 0. Its timestamp in
seconds is ``(pts[i] - pts[0]) * time_base``, so frame 0 is at 0.0 s.

Every failure (missing file, not a video, corrupt data, no video stream) raises ``VideoError``
naming the file and what went wrong.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from modalab._optional import lazy
from modalab.errors import ModalabError

av = lazy("av")  # PyAV, imported on first use (pip install 'modalab[video]')


class VideoError(ModalabError, RuntimeError):
    """A video file is missing, unreadable, corrupt or unsupported; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns about a video stream without decoding it.

    ``pts`` holds every frame's presentation timestamp in stream ``time_base`` units, sorted
    (presentation order); ``keyframes`` the indices (into that order) of frames that start a GOP.
    """

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    time_base: Fraction
    pts: tuple[int, ...]
    keyframes: tuple[int, ...]
    codec: str

    @property
    def duration(self) -> float:
        """Seconds covered by the frames: last frame's timestamp plus one frame period."""
        if self.num_frames == 0:
            return 0.0
        return index_to_time(self, self.num_frames - 1) + 1.0 / self.fps

    def keyframe_before(self, index: int) -> int:
        """Index of the keyframe at or before frame ``index`` (0 if none is marked)."""
        pos = bisect.bisect_right(self.keyframes, index) - 1
        return self.keyframes[pos] if pos >= 0 else 0


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    p = Path(path)
    if not p.is_file():
        raise VideoError(f"{p}: no such video file")
    try:
        container = av.open(str(p), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise VideoError(f"{p}: cannot open as a video container ({e}); is it a video file?") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p}: the container has no video stream")
    return container


def index_to_time(info: VideoInfo, index: int) -> float:
    """Seconds from the first frame to frame ``index`` (presentation order)."""
    if not 0 <= index < info.num_frames:
        raise IndexError(f"{info.path}: frame {index} out of range [0, {info.num_frames})")
    return float((info.pts[index] - info.pts[0]) * info.time_base)


def time_to_index(info: VideoInfo, seconds: float) -> int:
    """Index of the frame on screen at ``seconds``: the last frame whose timestamp is <= seconds.

    Times before 0 map to frame 0, times past the end to the last frame.
    """
    target = info.pts[0] + seconds / info.time_base if info.time_base else 0
    pos = bisect.bisect_right(info.pts, target + 1e-9) - 1
    return int(min(max(pos, 0), info.num_frames - 1))


def frame_times(info: VideoInfo, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Timestamps in seconds of ``indices``: (K,) float64."""
    pts = np.asarray(info.pts, dtype=np.float64)
    idx = np.asarray(indices, dtype=np.int64)
    return (pts[idx] - pts[0]) * float(info.time_base)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frames, fps, size, per-frame pts and keyframe indices of the first video stream.

    Reads packets only (no decoding). If the container does not give packet timestamps, falls back
    to one full decode to learn them.
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 1)
        pts_key: list[tuple[int, bool]] = []
        missing = False
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # flush packet at the end
                    continue
                if packet.pts is None:
                    missing = True
                    break
                pts_key.append((int(packet.pts), bool(packet.is_keyframe)))
            if missing:
                container.seek(0)
                pts_key = []
                for i, frame in enumerate(container.decode(stream)):
                    pts = frame.pts if frame.pts is not None else i
                    pts_key.append((int(pts), bool(frame.key_frame)))
        except av.FFmpegError as e:
            raise VideoError(f"{path}: corrupt video data while probing ({e})") from e
        codec = stream.codec_context.name
        width, height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate
    finally:
        container.close()
    if not pts_key:
        raise VideoError(f"{path}: the video stream holds no frames")
    pts_key.sort(key=lambda t: t[0])
    pts = tuple(p for p, _ in pts_key)
    keyframes = tuple(i for i, (_, k) in enumerate(pts_key) if k) or (0,)
    if rate:
        fps = float(rate)
    elif len(pts) > 1:
        fps = float((len(pts) - 1) / ((pts[-1] - pts[0]) * time_base))
    else:
        fps = 1.0
    return VideoInfo(
        path=str(path), num_frames=len(pts), fps=fps, width=width, height=height,
        time_base=time_base, pts=pts, keyframes=keyframes, codec=codec,
    )


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8


def _plan_runs(info: VideoInfo, wanted: list[int]) -> list[list[int]]:
    """Group sorted unique indices into runs served by one seek each.

    A new run starts when the next frame's keyframe lies after the previous wanted frame: then
    seeking skips at least the frames between them; otherwise decoding forward is never slower.
    """
    runs: list[list[int]] = []
    for i in wanted:
        if runs and info.keyframe_before(i) <= runs[-1][-1]:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int] | np.ndarray,
    info: VideoInfo | None = None,
    skip_nonref: bool = True,
    stats: dict | None = None,
) -> np.ndarray:
    """Decode the frames ``indices`` (presentation order, duplicates and any order allowed).

    Returns (K, H, W, 3) uint8 RGB in the order of ``indices``. Each run of nearby frames costs one
    backward seek to its keyframe plus decoding up to its last frame. Pass ``info`` from ``probe``
    to skip probing again. ``skip_nonref`` lets the decoder drop unwanted non-reference frames
    (B-frames nothing depends on) on the way to a wanted frame; the output is identical.
    ``stats``, if given, receives counts: ``seeks`` and ``decoded`` (frames out of the decoder).
    """
    info = info if info is not None else probe(path)
    idx = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
    bad = [i for i in idx if not 0 <= i < info.num_frames]
    if bad:
        raise IndexError(
            f"{path}: frame indices {bad[:5]} out of range [0, {info.num_frames}); "
            f"the video has {info.num_frames} frames"
        )
    if not idx:
        return np.zeros((0, info.height, info.width, 3), dtype=np.uint8)
    wanted = sorted(set(idx))
    pts_to_index = {p: i for i, p in enumerate(info.pts)}
    got: dict[int, np.ndarray] = {}
    counts = stats if stats is not None else {}
    counts.update(seeks=0, decoded=0)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        for run in _plan_runs(info, wanted):
            _decode_run(container, stream, info, run, pts_to_index, got, skip_nonref, counts)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: corrupt video data while decoding ({e})") from e
    finally:
        container.close()
    return np.stack([got[i] for i in idx])  # (K, H, W, 3)


def _decode_run(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    info: VideoInfo,
    run: list[int],
    pts_to_index: dict[int, int],
    got: dict[int, np.ndarray],
    skip_nonref: bool,
    counts: dict,
) -> None:
    """Seek to the keyframe before ``run[0]`` and decode forward to ``run[-1]``.

    With ``skip_nonref`` the decoder drops non-reference frames that are not wanted (no other
    frame depends on them, so the wanted frames are unchanged). If the demuxer lands after the
    wanted frame (an inexact index), retry from earlier keyframes and finally from the start of
    the file, so the result is always exact.
    """
    ctx = stream.codec_context
    key = info.keyframe_before(run[0])
    candidates = [k for k in info.keyframes if k <= key][::-1] + [None]
    todo = set(run)
    for k in candidates:
        todo_pts = {info.pts[i] for i in todo}
        container.seek(info.pts[k if k is not None else 0], stream=stream, backward=True)
        counts["seeks"] += 1
        first, done = True, False
        for packet in container.demux(stream):
            if skip_nonref:
                ctx.skip_frame = "DEFAULT" if packet.pts in todo_pts else "NONREF"
            for frame in packet.decode():
                counts["decoded"] += 1
                i = pts_to_index.get(frame.pts) if frame.pts is not None else None
                if i is None:
                    continue
                if first:
                    first = False
                    if i > run[0] and k is not None:
                        done = True  # landed too late: retry from an earlier keyframe
                        break
                if i in todo:
                    got[i] = _to_rgb(frame)
                    todo.discard(i)
                if i >= run[-1] or not todo:
                    done = True
                    break
            if done:
                break
        ctx.skip_frame = "DEFAULT"
        if not todo or k is None:
            break
    if todo:
        raise VideoError(
            f"{info.path}: could not decode frames {sorted(todo)[:5]} (the stream ends early or "
            f"its timestamps do not match the container index); the file may be truncated"
        )


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: int = 25,
    codec: str = "libx264",
    gop: int | None = None,
    crf: int = 18,
) -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames to ``path`` (container from the suffix, e.g. .mp4).

    ``gop`` is the keyframe interval in frames (default 2 s = 2 * fps); for libx264, scene-cut
    keyframes are disabled so keyframes fall exactly every ``gop`` frames. Single-threaded; even so,
    libx264 was seen (2026-12-06, a loaded 2-core machine) to produce one of two slightly different
    encodings of the same frames now and then (decoded mean difference < 1.5 grey levels), so the
    bytes are not guaranteed identical across runs. H and W must be even for yuv420p.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"{path}: frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}"
        )
    gop = gop or 2 * fps
    path = Path(path)
    options = {"threads": "1"}
    if codec in ("libx264", "h264"):
        x264 = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        options.update({"crf": str(crf), "x264-params": x264})
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.thread_count = 1
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_all(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame sequentially: (T, H, W, 3) uint8. The reference for ``read_frames``."""
    container = _open(path)
    try:
        frames = [_to_rgb(f) for f in container.decode(container.streams.video[0])]
    except av.FFmpegError as e:
        raise VideoError(f"{path}: corrupt video data while decoding ({e})") from e
    finally:
        container.close()
    if not frames:
        raise VideoError(f"{path}: the video stream holds no frames")
    return np.stack(frames)  # (T, H, W, 3)
