"""A built-in synthetic spoken-digit set: formant synthesis of "zero" ... "nine", no system packages.

Each digit word is a short sequence of phone-like segments: vowels and nasals (a glottal pulse train
through formant resonators F1-F3), fricatives (band-passed noise, optionally voiced) and bursts.
Speakers differ in pitch (f0), speaking rate and vocal-tract length (all formants scaled), with small
per-utterance jitter, so a classifier must generalise across speakers. It is a stand-in for real
recordings in tests and smoke runs, not a speech corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# segments: ("v", F1, F2, ms) vowel/approximant, ("n", ms) nasal, ("f", centre Hz, ms, voiced) fricative,
# ("b", ms) burst
_SPEC: dict[str, list[tuple]] = {
    "zero": [("f", 5000, 80, True), ("v", 270, 2290, 110), ("v", 490, 1350, 70), ("v", 570, 840, 140)],
    "one": [("v", 300, 610, 70), ("v", 640, 1190, 150), ("n", 90)],
    "two": [("b", 25), ("f", 4000, 40, False), ("v", 300, 870, 200)],
    "three": [("f", 6500, 100, False), ("v", 490, 1350, 60), ("v", 270, 2290, 170)],
    "four": [("f", 3500, 110, False), ("v", 570, 840, 160), ("v", 490, 1350, 80)],
    "five": [("f", 3500, 100, False), ("v", 730, 1090, 130), ("v", 270, 2290, 90), ("f", 3500, 60, True)],
    "six": [("f", 6000, 110, False), ("v", 390, 1990, 110), ("b", 25), ("f", 6000, 100, False)],
    "seven": [("f", 6000, 100, False), ("v", 530, 1840, 110), ("f", 3500, 50, True), ("v", 500, 1500, 70),
              ("n", 80)],
    "eight": [("v", 530, 1840, 130), ("v", 390, 1990, 90), ("b", 30)],
    "nine": [("n", 70), ("v", 730, 1090, 140), ("v", 390, 1990, 90), ("n", 90)],
}


@dataclass(frozen=True)
class Speaker:
    name: str
    f0: float  # Hz
    rate: float  # > 1 speaks faster
    formant_shift: float  # scales every formant (shorter vocal tract -> higher)


def make_speakers(n: int, seed: int = 0) -> list[Speaker]:
    """``n`` speakers with pitch 85-260 Hz, rate 0.8-1.25, formant scale 0.85-1.2."""
    rng = np.random.default_rng(seed)
    return [Speaker(f"s{i:02d}", float(rng.uniform(85, 260)), float(rng.uniform(0.8, 1.25)),
                    float(rng.uniform(0.85, 1.2))) for i in range(n)]


def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / sr)
    a = [1.0, -2 * r * np.cos(2 * np.pi * freq / sr), r * r]
    from scipy.signal import lfilter  # local: keeps `modalab list` free of scipy

    return lfilter([1 - r], a, x)


def _glottal(n: int, f0: float, sr: int, rng: np.random.Generator,
             contour: tuple[float, float] = (1.05, 0.92)) -> np.ndarray:
    f = f0 * (1 + 0.02 * rng.standard_normal()) * np.linspace(*contour, n)  # default: falling intonation
    phase = np.cumsum(f) / sr
    return (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64) - 1.0 / max(sr / f0, 1)


def synth_digit(digit: int, speaker: Speaker, sr: int = 16000, rng: np.random.Generator | None = None,
                contour: tuple[float, float] = (1.05, 0.92)) -> np.ndarray:
    """Synthesise one utterance of ``WORDS[digit]`` (float32, peak 0.5, with 50 ms silence around).

    ``contour`` scales the speaker's f0 linearly from its first to its second value over each voiced
    segment (the default falls, a statement; e.g. (0.95, 1.45) rises, a question)."""
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be 0-9, got {digit}")
    rng = rng or np.random.default_rng()
    parts = []
    for seg in _SPEC[WORDS[digit]]:
        kind = seg[0]
        ms = seg[-1] if kind in ("v", "n", "b") else seg[2]
        n = int(sr * ms / 1000 / speaker.rate * rng.uniform(0.9, 1.1))
        if kind in ("v", "n"):
            src = _glottal(n, speaker.f0, sr, rng, contour)
            formants = [(seg[1], 80), (seg[2], 100), (2800, 150)] if kind == "v" else [(250, 60), (2300, 200)]
            y = sum(_resonator(src, min(f * speaker.formant_shift, sr / 2 - 200), bw, sr) for f, bw in formants)
            y *= 0.35 if kind == "n" else 1.0
        elif kind == "f":
            centre = min(seg[1] * speaker.formant_shift, sr / 2 - 600)
            y = _resonator(rng.standard_normal(n), centre, 1500, sr) * 0.4
            if seg[3]:
                y += 0.3 * _resonator(_glottal(n, speaker.f0, sr, rng, contour), 300, 100, sr)
        else:
            y = rng.standard_normal(n) * np.exp(-np.arange(n) / (0.004 * sr))
        ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.008 * sr))
        parts.append(y * ramp)
    y = np.concatenate(parts)
    y = y / (np.max(np.abs(y)) + 1e-12) * 0.5
    pad = np.zeros(int(0.05 * sr))
    return np.concatenate([pad, y, pad]).astype(np.float32)


def spoken_digits(n_speakers: int = 8, per_digit: int = 2, seed: int = 0, sr: int = 16000,
                  out_dir: str | Path | None = None) -> list[dict]:
    """The whole set: records {audio, label (0-9), text, speaker, index}, deterministic by seed.

    With ``out_dir`` also writes ``{label}_{speaker}_{index}.wav`` (the audio_folder default pattern).
    """
    speakers = make_speakers(n_speakers, seed)
    rng = np.random.default_rng(seed + 1)
    out = []
    for spk in speakers:
        for digit in range(10):
            for i in range(per_digit):
                out.append({"audio": synth_digit(digit, spk, sr, rng), "label": digit, "text": WORDS[digit],
                            "speaker": spk.name, "index": i})
    if out_dir is not None:
        import soundfile as sf

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        for r in out:
            sf.write(d / f"{r['label']}_{r['speaker']}_{r['index']}.wav", r["audio"], sr)
    return out
