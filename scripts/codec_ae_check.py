"""Issue 18's check: does the UNQUANTISED codec autoencoder reach positive SI-SNR in 300 steps?

    python scripts/codec_ae_check.py "l1:" "mse:loss='mse'" "skip:skip=True" ...

Each argument is ``name:keyword=value,...`` for :func:`run`. The autoencoder (``audio/codec.py``,
channels 8, strides 4-5-4, dim 32, RVQ bypassed) trains 300 Adam steps on random 0.1 s crops
(batch 8) of the 64 training scenes of ``codec_sweep.scenes`` (seed 1001, RMS 0.1) and is scored
on the first 0.5 s of the 16 validation scenes (seed 1003). Variants: ``lr``; ``loss`` ``l1``
(100 x L1), ``mse`` (100 x MSE / signal power) or ``sisnr`` (negative SI-SNR); ``stft`` (weight
of the multi-resolution STFT term); ``wn`` (weight norm on every conv); ``zero`` (the residual
branches' last convs zero-initialised); ``skip`` (the linear frame path, ``linear_skip``); ``steps``.
Also prints the bound of a per-frame linear code of the same width (PCA of 80-sample frames,
scored on the whole 2 s validation scenes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from codec_sweep import scenes  # noqa: E402

from modalab.audio import codec as C  # noqa: E402
from modalab.audio.codec_metrics import multires_stft_loss, si_snr  # noqa: E402


def pca_bound(train: torch.Tensor, val: torch.Tensor, dims: tuple[int, ...] = (8, 16, 32), hop: int = 80) -> None:
    frames = train.reshape(-1, hop)  # (N, hop)
    mu = frames.mean(0)
    basis = torch.linalg.svd(frames - mu, full_matrices=False)[2]  # (hop, hop)
    for d in dims:
        p = basis[:d]
        rec = ((val.reshape(-1, hop) - mu) @ p.T @ p + mu).reshape(val.shape)
        print(f"PCA {hop} -> {d} per frame: val SI-SNR {float(si_snr(rec, val).mean()):.2f} dB", flush=True)


def run(name: str, train: torch.Tensor, val: torch.Tensor, lr: float = 3e-3, loss: str = "l1", stft: float = 0.0,
        steps: int = 300, crop: int = 1600, wn: bool = False, zero: bool = False, skip: bool = False) -> float:
    torch.manual_seed(0)
    c = C.build_codec(channels=8, strides=(4, 5, 4), dim=32, linear_skip=skip)
    if wn:
        for m in c.modules():
            if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
                nn.utils.parametrizations.weight_norm(m)
    if zero:
        for m in c.modules():
            if isinstance(m, C.ResUnit):
                nn.init.zeros_(m.proj.weight)
                nn.init.zeros_(m.proj.bias)
    opt = torch.optim.Adam(c.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    t0 = time.process_time()
    for _ in range(steps):
        rows = torch.randint(0, train.shape[0], (8,), generator=g)
        st = torch.randint(0, train.shape[1] - crop, (8,), generator=g)
        x = torch.stack([train[r, a:a + crop] for r, a in zip(rows.tolist(), st.tolist())])  # (8, crop)
        y = c.autoencode(x)
        if loss == "l1":
            obj = 100 * (y - x).abs().mean()
        elif loss == "mse":
            obj = 100 * (y - x).pow(2).mean() / x.pow(2).mean()
        elif loss == "sisnr":
            obj = -si_snr(y, x).mean()
        else:
            raise ValueError(f"loss={loss!r}; expected l1, mse or sisnr")
        if stft:
            obj = obj + stft * multires_stft_loss(y, x)
        opt.zero_grad()
        obj.backward()
        opt.step()
    with torch.no_grad():
        v = float(si_snr(c.autoencode(val), val).mean())
    print(f"{name}: val SI-SNR {v:.2f} dB  cpu {time.process_time() - t0:.0f}s", flush=True)
    return v


def main() -> None:
    torch.set_num_threads(1)
    train, val_full = scenes(64, 1001, 2.0), scenes(16, 1003, 2.0)
    pca_bound(train, val_full)  # on the whole 2 s validation scenes
    val = val_full[:, :8000]
    for arg in sys.argv[1:]:
        name, _, kw = arg.partition(":")
        run(name, train, val, **eval(f"dict({kw})"))  # arguments typed by the user, as in a shell


if __name__ == "__main__":
    main()
