"""Codec losses and quality metrics: SI-SNR, multi-resolution STFT loss / distance.

- ``si_snr(est, ref)`` (Le Roux et al. 2019): zero-mean both, ``s_t = <est, ref> ref / ||ref||^2``,
  ``10 log10(||s_t||^2 / ||est - s_t||^2)`` dB, per item.
- ``multires_stft_loss`` (Yamamoto et al. 2020, Parallel WaveGAN): mean over FFT sizes of spectral
  convergence ``||S - S'||_F / ||S||_F`` plus the mean L1 of log magnitudes. As a metric it is the
  multi-resolution STFT distance (lower is better).
"""

from __future__ import annotations

import torch
from torch import Tensor


def si_snr(est: Tensor, ref: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SNR in dB of ``est`` against ``ref``, both (B, samples) -> (B,)."""
    if est.shape != ref.shape:
        raise ValueError(f"si_snr: est {tuple(est.shape)} and ref {tuple(ref.shape)} differ")
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    s_t = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps) * ref
    noise = est - s_t
    return 10 * torch.log10((s_t.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def stft_mag(x: Tensor, n_fft: int) -> Tensor:
    """|STFT| (B, n_fft // 2 + 1, frames), Hann window, hop n_fft // 4."""
    win = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    return torch.stft(x, n_fft, n_fft // 4, window=win, return_complex=True).abs()


def multires_stft_loss(est: Tensor, ref: Tensor, fft_sizes: tuple[int, ...] = (256, 512, 1024),
                       eps: float = 1e-7) -> Tensor:
    """Mean over ``fft_sizes`` of spectral convergence + log-magnitude L1 (a scalar)."""
    if est.shape != ref.shape:
        raise ValueError(f"multires_stft_loss: est {tuple(est.shape)} and ref {tuple(ref.shape)} differ")
    total = est.new_zeros(())
    for n in fft_sizes:
        s_est, s_ref = stft_mag(est, n), stft_mag(ref, n)
        sc = torch.linalg.norm(s_ref - s_est) / (torch.linalg.norm(s_ref) + eps)
        mag = (torch.log(s_ref + eps) - torch.log(s_est + eps)).abs().mean()
        total = total + sc + mag
    return total / len(fft_sizes)
