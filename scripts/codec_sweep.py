"""Train the RVQ audio codec once (quantiser dropout) and score it at 1, 2, 4, 8 levels.

    python scripts/codec_sweep.py --steps 300 --seed 0 --out runs/codec_sweep

Data: the built-in synthetic sound scenes (``data/sources/sound_events``), drawn as the
``sound_events`` source draws them (train: seed*1000+1, test: seed*1000+2), each scene scaled to
RMS 0.1. Training takes random 0.5 s crops; a validation draw
(seed*1000+3) is scored at all levels for choosing settings; the test split is scored once on whole scenes at every
level count: SI-SNR (dB), multi-resolution STFT distance, bits/s, per-level codebook usage.
No hyper-parameter was chosen on the test split (settings fixed before the run).
Writes ``results.json`` and ``table.md`` atomically into ``--out``.
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
from modalab.data.sources import sound_events as se

SR = 16000


def scenes(n: int, seed: int, duration: float) -> torch.Tensor:
    """(n, samples) float32, each scene scaled to RMS 0.1."""
    ys = [y for y, _ in se.generate_scenes(n, seed=seed, duration=duration, sr=SR, n_events=(1, 3))]
    x = torch.from_numpy(np.stack(ys)).float()
    return 0.1 * x / x.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-8)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-test", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wave-weight", type=float, default=10.0, help="weight of the waveform L1 term")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--out", type=Path, default=Path("runs/codec_sweep"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    train = scenes(args.n_train, args.seed * 1000 + 1, 2.0)
    test = scenes(args.n_test, args.seed * 1000 + 2, 2.0)
    val = scenes(args.n_test, args.seed * 1000 + 3, 2.0)  # for choosing settings; test is reported
    codec = build_codec(channels=8, strides=(4, 5, 4), dim=32, n_levels=max(args.levels), codebook_size=64)
    opt = torch.optim.Adam(codec.parameters(), lr=args.lr)
    crop = SR // 2
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    codec.train()
    for step in range(1, args.steps + 1):
        rows = torch.randint(0, train.shape[0], (args.batch,), generator=g)
        starts = torch.randint(0, train.shape[1] - crop, (args.batch,), generator=g)
        x = torch.stack([train[r, s: s + crop] for r, s in zip(rows.tolist(), starts.tolist())])  # (B, crop)
        y, _, aux = codec(x)
        loss = (y - x).abs().mean() * args.wave_weight + multires_stft_loss(y, x) + aux["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == 1:
            print(f"step {step} loss {float(loss.detach()):.4f} n_q {aux['n_q']} ({time.time() - t0:.0f}s)", flush=True)
    codec.eval()
    rows_out = []
    with torch.no_grad():
        yv = codec(val)[0]
        val_res = {"si_snr_db": float(si_snr(yv, val).mean()), "mr_stft": float(multires_stft_loss(yv, val))}
        for n_q in args.levels:
            y, codes, aux = codec(test, n_q=n_q)
            rows_out.append({"n_q": n_q, "bits_per_s": codec.bits_per_second(n_q),
                             "si_snr_db": float(si_snr(y, test).mean()),
                             "mr_stft": float(multires_stft_loss(y, test)),
                             "usage_per_level": [round(u, 3) for u in aux["usage"]]})
    args.out.mkdir(parents=True, exist_ok=True)
    res = {"seed": args.seed, "steps": args.steps, "lr": args.lr, "wave_weight": args.wave_weight,
           "val_all_levels": val_res, "split": "test", "n_test": args.n_test,
           "frame_rate": codec.frame_rate, "codebook_size": 64, "rows": rows_out}
    write_atomic(args.out / "results.json", json.dumps(res, indent=1))
    lines = ["| levels | bits/s | SI-SNR dB | MR-STFT dist | codebook usage per level |", "|---|---|---|---|---|"]
    lines += [f"| {r['n_q']} | {r['bits_per_s']:.0f} | {r['si_snr_db']:.2f} | {r['mr_stft']:.3f} | "
              f"{', '.join(f'{u:.2f}' for u in r['usage_per_level'])} |" for r in rows_out]
    write_atomic(args.out / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
