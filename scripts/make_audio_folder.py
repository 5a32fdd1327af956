"""Write a folder of spoken-digit .wav files named ``{label}_{speaker}_{index}.wav`` to disk.

The files come from the built-in formant synthesiser (``data/sources/spoken_digits.py``) with its own
seed, so the speakers differ from the built-in set's, and are written the way a recorded corpus
arrives rather than the way the built-in source hands clips over: at ``--sr`` (8 kHz by default, like
the Free Spoken Digit Dataset, so the loader has to resample to 16 kHz), as 16-bit PCM, each file
with its own length (no padding to a fixed clip), a random gain and, with ``--snr-db``, background
noise (pink-ish: white noise through a one-pole low-pass) at a random SNR in the given range.

    python scripts/make_audio_folder.py OUT_DIR [--speakers 12] [--per-digit 5] [--sr 8000]
        [--snr-db 10 30] [--seed 7]

then ``modalab run recipes/clap_spoken_digits.yaml data.source=audio_folder data.root=OUT_DIR``.
Prints one JSON line: files written, speakers, per-label counts, total seconds.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from modalab.data.sources.spoken_digits import spoken_digits

SYNTH_SR = 16000


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Low-passed white noise, unit RMS: (n,)."""
    x = lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def render(out_dir: Path, speakers: int, per_digit: int, sr: int, snr_db: tuple[float, float] | None,
           seed: int) -> dict:
    """Synthesise the set and write it under ``out_dir``; returns a summary of what was written."""
    if sr <= 0 or sr > 48000:
        raise ValueError(f"--sr={sr}: expected a sample rate in (0, 48000] Hz")
    if snr_db is not None and snr_db[0] > snr_db[1]:
        raise ValueError(f"--snr-db={snr_db}: expected LOW <= HIGH")
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.glob("*.wav")):
        raise FileExistsError(f"{out_dir} already holds .wav files; pass an empty or new folder")
    rng = np.random.default_rng(seed + 12345)
    recs = spoken_digits(n_speakers=speakers, per_digit=per_digit, seed=seed, sr=SYNTH_SR)
    seconds = 0.0
    for r in recs:
        y = r["audio"].astype(np.float64)  # (n,) at 16 kHz, peak 0.5
        if sr != SYNTH_SR:
            y = librosa.resample(y, orig_sr=SYNTH_SR, target_sr=sr, res_type="soxr_hq")
        y = y * rng.uniform(0.3, 1.6)  # recording level
        if snr_db is not None:
            rms = np.sqrt(np.mean(y ** 2))
            y = y + _noise(len(y), rng) * rms * 10 ** (-rng.uniform(*snr_db) / 20)
        y = np.clip(y, -0.999, 0.999)
        sf.write(out_dir / f"{r['label']}_{r['speaker']}_{r['index']}.wav", y, sr, subtype="PCM_16")
        seconds += len(y) / sr
    return {"root": str(out_dir), "files": len(recs), "sr": sr,
            "speakers": sorted({r["speaker"] for r in recs}),
            "per_label": dict(sorted(Counter(str(r["label"]) for r in recs).items())),
            "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--speakers", type=int, default=12)
    ap.add_argument("--per-digit", type=int, default=5)
    ap.add_argument("--sr", type=int, default=8000)
    ap.add_argument("--snr-db", type=float, nargs=2, default=(10.0, 30.0), metavar=("LOW", "HIGH"))
    ap.add_argument("--clean", action="store_true", help="no background noise")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    summary = render(a.out_dir, a.speakers, a.per_digit, a.sr, None if a.clean else tuple(a.snr_db), a.seed)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
