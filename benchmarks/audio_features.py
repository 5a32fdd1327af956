"""Audio features: modalab (batched torch) vs librosa, in one process.

Three comparisons on a batch of B clips x S seconds at 16 kHz (defaults 64 x 10 s):
  1. Whisper log-mel alone: librosa stft + mel + log (batched call) vs ``features.log_mel``.
  2. The full bundle (mel/log-mel, MFCC, ZCR, RMS, centroid, rolloff, YIN F0): librosa's separate
     calls (each recomputes its frames / STFT) vs ``features.feature_bundle`` (one framing + STFT).
  3. F0 of pYIN quality: ``librosa.pyin`` vs ``features.pyin`` on the first ``--pyin-clips`` clips
     (librosa's pyin is ~0.5 s per clip, so it is timed on fewer clips and reported per clip), with
     agreement of voicing and pitch.
librosa is warmed up first (its first calls compile with numba). Peak memory = peak RSS growth
during the call, sampled every 2 ms. On a CUDA machine the torch side is also timed on the GPU.

    python benchmarks/audio_features.py [--batch 64] [--seconds 10] [--pyin-clips 4] [--threads N]
        [--repeat 2]
"""

from __future__ import annotations

import argparse
import threading
import time

import librosa
import numpy as np
import torch

from modalab.audio import features as A
from modalab.audio.bundle import feature_bundle
from modalab.audio import pitch as P

SR = 16000


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def measure(fn, repeat: int = 1):
    """(best seconds over ``repeat`` runs, peak RSS growth in MB, result of the last run)."""
    best, peak_mb, out = float("inf"), 0.0, None
    for _ in range(repeat):
        base, peak, stop = _rss(), [0], threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], _rss() - base)
                time.sleep(0.002)

        th = threading.Thread(target=watch)
        th.start()
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        stop.set()
        th.join()
        peak_mb = max(peak_mb, peak[0] / 2 ** 20)
    return best, peak_mb, out


def make_batch(b: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Half noisy harmonic glides (voiced), half noise: realistic work for pitch trackers."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    y = 0.1 * rng.standard_normal((b, n))
    for i in range(0, b, 2):
        f = rng.uniform(100, 250) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.2, 1) * t))
        ph = 2 * np.pi * np.cumsum(f) / SR
        y[i] += (np.sin(ph) + 0.5 * np.sin(2 * ph)) * (np.sin(2 * np.pi * 0.3 * t) > -0.5)
    return y.astype(np.float32)


def librosa_log_mel(y):
    spec = librosa.stft(y, n_fft=400, hop_length=160, pad_mode="reflect")[..., :-1]
    mel = librosa.filters.mel(sr=SR, n_fft=400, n_mels=80) @ (np.abs(spec) ** 2)
    logs = np.log10(np.maximum(mel, 1e-10))
    logs = np.maximum(logs, logs.max(axis=(-2, -1), keepdims=True) - 8.0)
    return (logs + 4.0) / 4.0


def librosa_bundle(y):
    mel = librosa.feature.melspectrogram(y=y, sr=SR)
    return {
        "log_mel": librosa.power_to_db(mel),
        "mfcc": librosa.feature.mfcc(y=y, sr=SR),
        "zcr": librosa.feature.zero_crossing_rate(y),
        "rms": librosa.feature.rms(y=y),
        "centroid": librosa.feature.spectral_centroid(y=y, sr=SR),
        "rolloff": librosa.feature.spectral_rolloff(y=y, sr=SR),
        "f0": librosa.yin(y, fmin=65, fmax=2093, sr=SR),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--pyin-clips", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--repeat", type=int, default=2, help="bundle: best of this many runs per side")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    y = make_batch(args.batch, args.seconds)
    yt = torch.from_numpy(y)
    warm = y[:2, : SR]
    librosa_bundle(warm), librosa_log_mel(warm), librosa.pyin(warm, fmin=65, fmax=2093, sr=SR)
    feature_bundle(torch.from_numpy(warm), SR), P.pyin(torch.from_numpy(warm), 65, 2093, sr=SR)

    rows = []
    t_l, m_l, ref = measure(lambda: librosa_log_mel(y), 2)
    t_o, m_o, ours = measure(lambda: A.log_mel(yt), 2)
    err = float(np.abs(ours.numpy() - ref).max())
    rows.append(("log-mel (Whisper, 80)", t_l, m_l, t_o, m_o, f"max err {err:.1e}"))

    t_l, m_l, _ = measure(lambda: librosa_bundle(y), args.repeat)
    t_o, m_o, _ = measure(lambda: feature_bundle(yt, SR), args.repeat)
    rows.append(("bundle (7 features)", t_l, m_l, t_o, m_o, "one STFT vs ~5"))

    k = args.pyin_clips
    t_l, m_l, (f_r, v_r, _) = measure(lambda: librosa.pyin(y[:k], fmin=65, fmax=2093, sr=SR))
    t_o, m_o, (f_o, v_o, _) = measure(lambda: P.pyin(yt[:k], 65, 2093, sr=SR))
    agree = float((v_o.numpy() == v_r).mean())
    both = v_r & v_o.numpy()
    cents = float(np.median(np.abs(1200 * np.log2(f_o.numpy()[both] / f_r[both])))) if both.any() else 0.0
    rows.append((f"pYIN ({k} clips)", t_l, m_l, t_o, m_o, f"voicing agree {agree:.3f}, median {cents:.2f} cents"))
    t_o64, m_o64, _ = measure(lambda: P.pyin(yt, 65, 2093, sr=SR))
    rows.append((f"pYIN ours, all {args.batch}", float("nan"), float("nan"), t_o64, m_o64,
                 f"{1000 * t_o64 / args.batch:.0f} ms/clip vs librosa {1000 * t_l / k:.0f} ms/clip "
                 f"-> {t_l / k / (t_o64 / args.batch):.1f}x"))

    if torch.cuda.is_available():
        yg = yt.cuda()
        for name, fn in [("log-mel", lambda: A.log_mel(yg)), ("bundle", lambda: feature_bundle(yg, SR)),
                         ("pYIN", lambda: P.pyin(yg, 65, 2093, sr=SR))]:
            fn()
            t_g, _, _ = measure(fn, 3)
            rows.append((f"{name} GPU ({torch.cuda.get_device_name()})", float("nan"), float("nan"), t_g,
                         float("nan"), ""))

    print(f"batch {args.batch} x {args.seconds} s at {SR} Hz, torch threads {torch.get_num_threads()}")
    print(f"{'task':34s} {'librosa s':>10s} {'MB':>7s} {'ours s':>9s} {'MB':>7s} {'speedup':>8s}  note")
    for name, tl, ml, to, mo, note in rows:
        print(f"{name:34s} {tl:10.3f} {ml:7.0f} {to:9.3f} {mo:7.0f} {tl / to:8.1f}x  {note}")


if __name__ == "__main__":
    main()
