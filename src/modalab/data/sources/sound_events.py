"""Synthetic environmental scenes with exact event labels (for tagging and detection tests).

Each scene is a quiet background noise bed with a few events mixed in at random onsets and SNRs.
Event classes are made from first principles (no recordings):

    bark    harmonic bursts (f0 400-700 Hz, 3-4 barks, fast decay)
    siren   frequency sweep 600-1400 Hz, slow up-down
    rain    band-limited noise with random droplet clicks
    engine  low hum (40-110 Hz) with harmonics and slow amplitude modulation
    beep    pure tone 1-3 kHz, 0.1-0.4 s
    clap    1-3 noise impulses of ~30 ms, sharp attack
    chirp   fast upward FM 2-5 kHz, 0.1-0.3 s (bird-like)

Labels are exact: an event occupies [onset, offset) seconds, the span of its non-zero samples.
Everything is drawn from ``numpy.random.default_rng(seed)``, so a seed fixes the whole data set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLASSES: tuple[str, ...] = ("bark", "siren", "rain", "engine", "beep", "clap", "chirp")


def _fade(x: np.ndarray, sr: int, ms: float = 5.0) -> np.ndarray:
    n = min(len(x) // 2, max(1, int(sr * ms / 1000)))
    ramp = np.linspace(0.0, 1.0, n)
    x[:n] *= ramp
    x[-n:] *= ramp[::-1]
    return x


def _lowpass_noise(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    spec[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(spec, n)


def synth_event(name: str, rng: np.random.Generator, sr: int) -> np.ndarray:
    """One event of class ``name`` (unit RMS), length drawn from the class's range."""
    if name == "bark":
        parts = []
        for _ in range(int(rng.integers(3, 5))):
            n = int(sr * rng.uniform(0.08, 0.15))
            t = np.arange(n) / sr
            f0 = rng.uniform(400, 700)
            tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6)) * np.exp(-t * 25)
            parts += [tone, np.zeros(int(sr * rng.uniform(0.05, 0.12)))]
        y = np.concatenate(parts[:-1])
    elif name == "siren":
        n = int(sr * rng.uniform(1.0, 2.5))
        t = np.arange(n) / sr
        f = 1000 + 400 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t)
        y = np.sin(2 * np.pi * np.cumsum(f) / sr)
    elif name == "rain":
        n = int(sr * rng.uniform(1.0, 3.0))
        y = _lowpass_noise(rng, n, sr, 500, 6000)
        drops = rng.random(n) < 0.002
        y += 4 * drops * rng.standard_normal(n)
    elif name == "engine":
        n = int(sr * rng.uniform(1.0, 3.0))
        t = np.arange(n) / sr
        f0 = rng.uniform(40, 110)
        y = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.28)) / h for h in range(1, 8))
        y *= 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(2, 6) * t)
    elif name == "beep":
        n = int(sr * rng.uniform(0.1, 0.4))
        y = np.sin(2 * np.pi * rng.uniform(1000, 3000) * np.arange(n) / sr)
    elif name == "clap":
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            n = int(sr * 0.03)
            burst = _lowpass_noise(rng, n, sr, 800, 7000) * np.exp(-np.arange(n) / (0.006 * sr))
            parts += [burst, np.zeros(int(sr * rng.uniform(0.08, 0.2)))]
        y = np.concatenate(parts[:-1])
    elif name == "chirp":
        n = int(sr * rng.uniform(0.1, 0.3))
        t = np.arange(n) / sr
        f = np.linspace(rng.uniform(2000, 3000), rng.uniform(4000, 5000), n)
        y = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.sin(np.pi * t / t[-1])
    else:
        raise ValueError(f"unknown event class {name!r}; expected one of {CLASSES}")
    y = _fade(np.asarray(y, dtype=np.float64), sr)
    return y / (np.sqrt(np.mean(y ** 2)) + 1e-12)


def make_scene(rng: np.random.Generator, duration: float = 5.0, sr: int = 16000,
               n_events: tuple[int, int] = (1, 4), snr_db: tuple[float, float] = (0.0, 20.0),
               classes: tuple[str, ...] = CLASSES, noise_dbfs: float = -45.0) -> tuple[np.ndarray, list[dict]]:
    """One scene: (audio float32 (samples,), events [{label, onset, offset, snr_db}]) sorted by onset.

    Event SNR is the ratio of the event's RMS to the background's RMS.
    """
    n = int(round(duration * sr))
    bg = _lowpass_noise(rng, n, sr, 50, sr / 2 - 100)
    bg *= 10 ** (noise_dbfs / 20) / (np.sqrt(np.mean(bg ** 2)) + 1e-12)
    y = bg.copy()
    events = []
    for _ in range(int(rng.integers(n_events[0], n_events[1] + 1))):
        label = classes[int(rng.integers(len(classes)))]
        ev = synth_event(label, rng, sr)[:n]
        start = int(rng.integers(0, n - len(ev) + 1))
        snr = float(rng.uniform(*snr_db))
        y[start:start + len(ev)] += ev * 10 ** ((noise_dbfs + snr) / 20)
        nz = np.flatnonzero(ev)
        events.append({"label": label, "onset": float(start + nz[0]) / sr, "offset": float(start + nz[-1] + 1) / sr,
                       "snr_db": snr})
    peak = np.max(np.abs(y))
    if peak > 0.99:
        y *= 0.99 / peak
    events.sort(key=lambda e: e["onset"])
    return y.astype(np.float32), events


def generate_scenes(n: int, seed: int = 0, duration: float = 5.0, sr: int = 16000,
                    out_dir: str | Path | None = None, **scene_kwargs) -> list[tuple[np.ndarray, list[dict]]]:
    """``n`` scenes from ``seed``; with ``out_dir`` also writes scene_00000.wav ... and labels.json."""
    rng = np.random.default_rng(seed)
    scenes = [make_scene(rng, duration, sr, **scene_kwargs) for _ in range(n)]
    if out_dir is not None:
        import soundfile as sf

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        labels = {}
        for i, (y, events) in enumerate(scenes):
            name = f"scene_{i:05d}.wav"
            sf.write(out / name, y, sr, subtype="FLOAT")
            labels[name] = events
        (out / "labels.json").write_text(json.dumps({"sr": sr, "classes": list(CLASSES), "files": labels},
                                                    indent=1))
    return scenes


def clip_targets(events: list[dict], classes: tuple[str, ...] = CLASSES) -> np.ndarray:
    """Multi-hot (n_classes,) float32: which classes occur in the clip."""
    t = np.zeros(len(classes), dtype=np.float32)
    for e in events:
        t[classes.index(e["label"])] = 1.0
    return t


def frame_targets(events: list[dict], n_frames: int, hop_s: float,
                  classes: tuple[str, ...] = CLASSES) -> np.ndarray:
    """(n_frames, n_classes) float32: frame i (centre (i + 0.5) * hop_s) active inside an event."""
    centres = (np.arange(n_frames) + 0.5) * hop_s
    t = np.zeros((n_frames, len(classes)), dtype=np.float32)
    for e in events:
        t[(centres >= e["onset"]) & (centres < e["offset"]), classes.index(e["label"])] = 1.0
    return t
