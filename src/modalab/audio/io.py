"""Reading audio files: soundfile decode, mono mix, resampling, normalisation, pad-or-trim.

Every problem with a file raises ``AudioError`` naming the file and what was wrong (unreadable or
corrupt, empty, non-finite samples, unexpected sample rate, too short), so a data pipeline can either
stop on it or skip and count it (``load_many(..., on_error="skip")``).

Resampling goes through ``librosa.resample``; with the ``soxr`` package installed (it is a librosa
dependency) the default ``res_type="soxr_hq"`` is used, otherwise librosa's own polyphase
("polyphase", scipy) resampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import numpy as np

from modalab._optional import lazy

sf = lazy("soundfile")  # imported on first use (pip install 'modalab[audio]')

from modalab.errors import ModalabError


class AudioError(ModalabError, ValueError):
    """A file could not be used as audio; the message names the file and the problem."""


try:  # pragma: no cover - depends on the environment
    import soxr  # noqa: F401

    RESAMPLER = "soxr_hq"
except ImportError:  # pragma: no cover
    RESAMPLER = "polyphase"


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample the last axis from ``orig_sr`` to ``target_sr`` (soxr_hq when available)."""
    if orig_sr == target_sr:
        return y
    import librosa

    return librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type=RESAMPLER)


def peak_normalize(y: np.ndarray, peak: float = 0.99, eps: float = 1e-9) -> np.ndarray:
    """Scale so that max |y| == ``peak`` (silence is returned unchanged)."""
    m = float(np.max(np.abs(y))) if y.size else 0.0
    return y if m < eps else y * (peak / m)


def loudness_normalize(y: np.ndarray, target_dbfs: float = -20.0, eps: float = 1e-9) -> np.ndarray:
    """Scale so that the RMS level is ``target_dbfs`` dB re full scale (silence unchanged).

    This is RMS loudness, not ITU-R BS.1770 LUFS (which adds K-weighting and gating).
    """
    r = float(np.sqrt(np.mean(np.square(y)))) if y.size else 0.0
    return y if r < eps else y * (10 ** (target_dbfs / 20) / r)


def pad_or_trim(y: np.ndarray, length: int, random_crop: np.random.Generator | None = None) -> np.ndarray:
    """Zero-pad at the end or trim to ``length`` samples (a random window if a generator is given)."""
    n = y.shape[-1]
    if n >= length:
        start = int(random_crop.integers(0, n - length + 1)) if random_crop is not None else 0
        return y[..., start:start + length]
    return np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, length - n)])


def load(path: str | Path, sr: int | None = 16000, mono: bool = True,
         expected_sr: int | None = None, normalize: Literal["none", "peak", "loudness"] = "none",
         length: int | None = None, min_samples: int = 1) -> tuple[np.ndarray, int]:
    """Read a wav/flac/ogg file as float32.

    Args:
        path: the file.
        sr: resample to this rate (None keeps the file's rate).
        mono: average the channels; otherwise return (channels, samples).
        expected_sr: if given, a file at any other rate is an error (checked before resampling).
        normalize: "peak" (max |y| = 0.99), "loudness" (RMS at -20 dBFS) or "none".
        length: pad or trim to this many samples (after resampling).
        min_samples: fewer decoded samples than this is an error.
    Returns:
        (audio, rate): audio (samples,) if mono else (channels, samples).
    Raises:
        AudioError naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"{path}: cannot decode as audio ({exc}); is the file corrupt or "
                         f"not wav/flac/ogg?") from exc
    if data.shape[0] < max(min_samples, 1):
        raise AudioError(f"{path}: empty or too short ({data.shape[0]} samples, need >= "
                         f"{max(min_samples, 1)})")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"{path}: {bad} non-finite samples (NaN or inf)")
    if expected_sr is not None and file_sr != expected_sr:
        raise AudioError(f"{path}: sample rate {file_sr} Hz, expected {expected_sr} Hz")
    y = data.T  # (channels, samples)
    if mono:
        y = y.mean(axis=0)
    if sr is not None and sr != file_sr:
        y = resample(y, file_sr, sr).astype(np.float32)
        file_sr = sr
    if normalize == "peak":
        y = peak_normalize(y)
    elif normalize == "loudness":
        y = loudness_normalize(y)
    elif normalize != "none":
        raise ValueError(f"normalize={normalize!r}; expected 'none', 'peak' or 'loudness'")
    if length is not None:
        y = pad_or_trim(y, length)
    return np.ascontiguousarray(y, dtype=np.float32), int(file_sr)


@dataclass
class LoadReport:
    """What ``load_many`` read and what it skipped (path -> reason)."""

    loaded: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


def load_many(paths: Iterable[str | Path], on_error: Literal["error", "skip"] = "error",
              **load_kwargs) -> tuple[list[np.ndarray], LoadReport]:
    """Load several files with ``load``; ``on_error="skip"`` skips bad files and counts them.

    Returns (arrays of the loaded files in order, report with loaded paths and skipped reasons).
    """
    if on_error not in ("error", "skip"):
        raise ValueError(f"on_error={on_error!r}; expected 'error' or 'skip'")
    out: list[np.ndarray] = []
    report = LoadReport()
    for p in paths:
        try:
            y, _ = load(p, **load_kwargs)
        except AudioError as exc:
            if on_error == "error":
                raise
            report.skipped[str(p)] = str(exc)
            continue
        out.append(y)
        report.loaded.append(Path(p))
    return out, report
