"""Train the RVQ audio codec once (quantiser dropout) and score it at 1, 2, 4, 8 levels.

    python scripts/codec_sweep.py --steps 300 --seed 0 --out runs/codec_sweep

Data: the built-in synthetic sound scenes (``data/sources/sound_events``), drawn as the
``sound_events`` source draws them (train: seed*1000+1, test: seed*1000+2), each scene scaled to
RMS 0.1 (``--rms``). Training takes random crops (``--crop``, default 0.5 s). The validation draw
(seed*1000+3) is scored at every level count and unquantised (``n_q`` 0: the RVQ bypassed,
``AudioCodec.autoencode``) for choosing settings; the test draw is scored only with
``--report-test``, once, after the settings were chosen: SI-SNR (dB), multi-resolution STFT
distance, bits/s, per-level codebook usage. ``--no-quant`` trains the autoencoder without the RVQ
(the check of issue 18); ``--no-linear-skip`` drops the codec's linear frame path (the
architecture before that check). ``--init-frames N`` fits all RVQ levels by k-means, residual by
residual, to about N encoder frames when quantisation starts; ``--quant-lr-scale`` lowers the
learning rate of the quantised steps (issue 18, the drop at switch-on; docs/benchmarks.md). Writes
``results.json`` and ``table.md`` atomically into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from modalab.audio.codec import build_codec
from modalab.audio.codec_metrics import multires_stft_loss, si_snr
from modalab.audio.codec_train import train_codec
from modalab.data.sources import sound_events as se

SR = 16000


def scenes(n: int, seed: int, duration: float, rms: float = 0.1) -> torch.Tensor:
    """(n, samples) float32, each scene scaled to RMS ``rms``."""
    ys = [y for y, _ in se.generate_scenes(n, seed=seed, duration=duration, sr=SR, n_events=(1, 3))]
    x = torch.from_numpy(np.stack(ys)).float()
    return rms * x / x.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-8)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def score(codec, wav: torch.Tensor, levels: list[int]) -> list[dict]:
    """One row per level count, plus the unquantised autoencoder (``n_q`` 0, RVQ bypassed)."""
    y = codec.autoencode(wav)
    rows = [{"n_q": 0, "bits_per_s": float("nan"), "si_snr_db": float(si_snr(y, wav).mean()),
             "mr_stft": float(multires_stft_loss(y, wav)), "usage_per_level": []}]
    for n_q in levels:
        y, _, aux = codec(wav, n_q=n_q)
        rows.append({"n_q": n_q, "bits_per_s": codec.bits_per_second(n_q),
                     "si_snr_db": float(si_snr(y, wav).mean()), "mr_stft": float(multires_stft_loss(y, wav)),
                     "usage_per_level": [round(u, 3) for u in aux["usage"]]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-test", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wave-weight", type=float, default=10.0, help="weight of the waveform L1 term")
    ap.add_argument("--stft-weight", type=float, default=1.0, help="weight of the multi-resolution STFT term")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--crop", type=int, default=SR // 2, help="training crop, samples")
    ap.add_argument("--decay", type=float, default=0.99, help="EMA decay of the RVQ codebooks")
    ap.add_argument("--warmup-steps", type=int, default=0, help="first steps with the RVQ bypassed")
    ap.add_argument("--init-frames", type=int, default=0,
                    help="k-means start of all RVQ levels, residual by residual, on about this many encoder "
                    "frames when quantisation starts (0: each level on the first batch that reaches it)")
    ap.add_argument("--quant-lr-scale", type=float, default=1.0,
                    help="learning rate of the quantised steps (after the warm-up) = lr * this")
    ap.add_argument("--no-linear-skip", action="store_true", help="the codec without its linear frame path "
                    "(the pre-issue-18-fix architecture)")
    ap.add_argument("--rms", type=float, default=0.1, help="RMS each scene is scaled to")
    ap.add_argument("--no-quant", action="store_true",
                    help="train and score the autoencoder with the RVQ bypassed (the codec's ceiling)")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--report-test", action="store_true",
                    help="also score the test draw (once, after settings were chosen on the validation draw)")
    ap.add_argument("--out", type=Path, default=Path("runs/codec_sweep"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    train = scenes(args.n_train, args.seed * 1000 + 1, 2.0, args.rms)
    test = scenes(args.n_test, args.seed * 1000 + 2, 2.0, args.rms)
    val = scenes(args.n_test, args.seed * 1000 + 3, 2.0, args.rms)  # for choosing settings; test is reported
    codec = build_codec(channels=args.channels, strides=(4, 5, 4), dim=args.dim, n_levels=max(args.levels),
                        codebook_size=64, linear_skip=not args.no_linear_skip,
                        decay=args.decay)
    t0 = time.time()
    train_codec(codec, train, args.steps, args.batch, args.lr, args.wave_weight, args.stft_weight, seed=args.seed,
                crop=args.crop, quantize=not args.no_quant, warmup_steps=args.warmup_steps,
                init_frames=args.init_frames, quant_lr_scale=args.quant_lr_scale,
                log=lambda m: print(f"{m} ({time.time() - t0:.0f}s)", flush=True))
    train_wall = time.time() - t0
    codec.eval()
    with torch.no_grad():
        val_rows = score(codec, val, [] if args.no_quant else args.levels)
        test_rows = score(codec, test, [] if args.no_quant else args.levels) if args.report_test else []
    args.out.mkdir(parents=True, exist_ok=True)
    res = {"seed": args.seed, "steps": args.steps, "lr": args.lr, "wave_weight": args.wave_weight,
           "stft_weight": args.stft_weight, "channels": args.channels, "dim": args.dim,
           "no_quant": args.no_quant,
           "linear_skip": not args.no_linear_skip, "crop": args.crop, "rms": args.rms,
           "warmup_steps": args.warmup_steps, "init_frames": args.init_frames, "quant_lr_scale": args.quant_lr_scale,
           "batch": args.batch, "decay": args.decay,
           "n_val": args.n_test, "val_rows": val_rows,
           "split": "test" if args.report_test else "val", "n_test": args.n_test if args.report_test else 0,
           "frame_rate": codec.frame_rate, "codebook_size": 64, "rows": test_rows,
           "train_seconds_wall": round(train_wall, 1)}
    write_atomic(args.out / "results.json", json.dumps(res, indent=1))
    rows_out = test_rows or val_rows
    lines = [f"split: {res['split']}",
             "| levels | bits/s | SI-SNR dB | MR-STFT dist | codebook usage per level |", "|---|---|---|---|---|"]
    lines += [f"| {r['n_q']} | {r['bits_per_s']:.0f} | {r['si_snr_db']:.2f} | {r['mr_stft']:.3f} | "
              f"{', '.join(f'{u:.2f}' for u in r['usage_per_level'])} |" for r in rows_out]
    write_atomic(args.out / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
