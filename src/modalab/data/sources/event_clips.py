"""Short single-event clips of the synthetic sound classes, one class label each (source ``event_clips``).

Each clip is ``duration`` seconds of the ``sound_events`` background bed (band-limited noise) with
one event of a class (``sound_events.synth_event``) starting within the first ``max_onset``
seconds, mixed at an SNR drawn from ``snr_db`` and scaled to RMS ``rms``; the event is cut at the
clip's end. Classes are balanced: ``n_per_class`` clips of each class per split, shuffled. Train,
test and the validation share are drawn from different seeds (``seed * 1000 + 11 / 12``; val is
``data.val_fraction`` of train, stratified). Used by ``audio_tokens_hierarchy``: class-conditional
generation of clips, judged by a classifier trained on these real clips.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from modalab.config import DataBase
from modalab.data.dataset import SampleDataset, carve_val
from modalab.data.sample import Sample
from modalab.data.sources import sound_events as se
from modalab.data.sources.audio_sources import SR, AudioSplits
from modalab.registry import register


def event_clip(label: str, rng: np.random.Generator, duration: float = 0.5, sr: int = SR,
               snr_db: tuple[float, float] = (10.0, 30.0), max_onset: float = 0.05, rms: float = 0.1,
               noise_dbfs: float = -45.0) -> np.ndarray:
    """One clip (samples,) float32 with one ``label`` event; see the module docstring."""
    n = int(round(duration * sr))
    bg = se._lowpass_noise(rng, n, sr, 50, sr / 2 - 100)
    bg *= 10 ** (noise_dbfs / 20) / (np.sqrt(np.mean(bg ** 2)) + 1e-12)
    ev = se.synth_event(label, rng, sr)
    start = int(rng.integers(0, int(max_onset * sr) + 1))
    ev = ev[: n - start]
    y = bg.copy()
    y[start:start + len(ev)] += ev * 10 ** ((noise_dbfs + float(rng.uniform(*snr_db))) / 20)
    return (rms * y / (np.sqrt(np.mean(y ** 2)) + 1e-12)).astype(np.float32)


def event_clips(n_per_class: int, seed: int, duration: float = 0.5, sr: int = SR,
                classes: tuple[str, ...] = se.CLASSES, **kw) -> tuple[np.ndarray, np.ndarray]:
    """(waves (N, samples) float32, labels (N,) int64), N = n_per_class * len(classes), shuffled."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    rng.shuffle(labels)
    waves = np.stack([event_clip(classes[int(c)], rng, duration, sr, **kw) for c in labels])
    return waves, labels.astype(np.int64)


class EventClipsConfig(DataBase):
    n_per_class: int = Field(64, gt=0, description="training clips per class (before the val share)")
    n_test_per_class: int = Field(16, gt=0)
    duration: float = Field(0.5, gt=0.05, le=10.0, description="seconds per clip")
    snr_db: tuple[float, float] = (10.0, 30.0)
    max_onset: float = Field(0.05, ge=0, description="latest event start, seconds")
    rms: float = Field(0.1, gt=0, description="each clip is scaled to this RMS")


@register("source", "event_clips", schema=EventClipsConfig)
def build_event_clips(cfg: EventClipsConfig, *, seed: int) -> AudioSplits:
    """Balanced single-event clips of the 7 synthetic sound classes, one label each."""
    if cfg.max_onset >= cfg.duration:
        raise ValueError(f"data.max_onset={cfg.max_onset} must be below data.duration={cfg.duration}")
    kw = {"duration": cfg.duration, "snr_db": cfg.snr_db, "max_onset": cfg.max_onset, "rms": cfg.rms}
    xtr, ytr = event_clips(cfg.n_per_class, seed * 1000 + 11, **kw)
    xte, yte = event_clips(cfg.n_test_per_class, seed * 1000 + 12, **kw)
    tr, va = carve_val(range(len(ytr)), cfg.val_fraction, seed, labels=ytr.tolist())

    def dataset(x: np.ndarray, y: np.ndarray, idx: list[int], split: str) -> SampleDataset:
        def make(i: int) -> Sample:
            j = idx[i]
            return Sample(id=f"event_clips/{split}/{j}", media=torch.from_numpy(x[j]),
                          text=se.CLASSES[int(y[j])], label=int(y[j]))
        return SampleDataset(len(idx), make)

    return AudioSplits(
        train=dataset(xtr, ytr, list(tr), "train"), test=dataset(xte, yte, list(range(len(yte))), "test"),
        val=dataset(xtr, ytr, list(va), "val") if len(va) else None, classnames=list(se.CLASSES),
        texts=list(se.CLASSES), image_size=int(round(cfg.duration * SR)), channels=1,
    )
