"""Short-lag autocorrelation of every frame, and YIN's difference function built from it.

``frame_acf`` gives ``acf[t, k] = sum_j x_t[j] x_t[j + k]`` (both indices inside frame t) for lags
``k = 0..max_lag`` of the centred frames of a batch. Two exact ways to get it:

- per frame: one real FFT of each frame padded to >= L + max_lag, |X|^2, inverse FFT;
- by hop blocks (when ``frame_length`` is a multiple ``m`` of ``hop`` and ``max_lag <= hop``): cut
  the signal once into hop-sized blocks b. Frame t is blocks t..t+m-1, and a lag ``k <= hop`` pairs
  a sample of block b only with block b or b+1, so
  ``acf_t = sum_{i<m-1} xcorr(block_{t+i}, ext_{t+i}) + acf(block_{t+m-1})`` where ``ext_b`` is
  block b followed by the first ``max_lag`` samples of block b+1. In the frequency domain this is
  ``sum_{i<m-1} conj(A_{t+i}) E_{t+i} + |A_{t+m-1}|^2`` (A, E: FFTs of size >= hop + max_lag of
  block and ext), then one inverse FFT per frame. Each block is transformed once instead of being
  part of m frames' FFTs, so for librosa's YIN defaults (2048 / 512, lags <= 247 at 16 kHz) the
  FFT work drops from two 2304-point transforms per frame to three 768-point ones.

Work runs in chunks of frames (``chunk``) so that memory stays bounded for long inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from modalab.audio.framing import _as_batch, pad_center


def _fft():
    """scipy.fft, imported on first use (keeps ``modalab list`` free of scipy)."""
    import scipy.fft

    return scipy.fft


def frame_acf_direct(frames: Tensor, max_lag: int, chunk: int = 4096) -> Tensor:
    """Autocorrelation of raw frames by one FFT each: (B, T, L) -> (B, T, max_lag + 1)."""
    B, T, L = frames.shape
    n = _fft().next_fast_len(L + max_lag, real=True)
    flat = frames.reshape(B * T, L)  # (N, L)
    out = []
    for s in range(0, flat.shape[0], chunk):
        spec = torch.view_as_real(torch.fft.rfft(flat[s:s + chunk], n=n)).square().sum(-1)  # |X|^2
        out.append(torch.fft.irfft(spec, n=n)[:, : max_lag + 1])
    return torch.cat(out).view(B, T, max_lag + 1)


def blocked_ok(frame_length: int, hop: int, max_lag: int) -> bool:
    """Whether ``frame_acf_blocked`` applies: frames are whole hops and lags fit in one hop."""
    return frame_length % hop == 0 and max_lag <= hop


def frame_acf_blocked(yp: Tensor, frame_length: int, hop: int, max_lag: int, chunk: int = 4096) -> Tensor:
    """Autocorrelation of the frames ``yp.unfold(-1, frame_length, hop)`` from hop blocks.

    yp: (B, Np) already-padded signal -> (B, T, max_lag + 1), T = 1 + (Np - frame_length) // hop.
    Needs ``blocked_ok(frame_length, hop, max_lag)``.
    """
    if not blocked_ok(frame_length, hop, max_lag):
        raise ValueError(f"frame_acf_blocked needs frame_length % hop == 0 and max_lag <= hop, got "
                         f"frame_length={frame_length}, hop={hop}, max_lag={max_lag}")
    B, Np = yp.shape
    m = frame_length // hop
    T = 1 + (Np - frame_length) // hop
    n = _fft().next_fast_len(hop + max_lag, real=True)
    step = max(1, chunk // max(B, 1))  # frames per chunk
    out = []
    for s in range(0, T, step):
        c = min(step, T - s)
        seg = yp[:, s * hop:(s + c + m - 1) * hop]  # (B, (c + m - 1) * hop): the blocks of c frames
        blocks = seg.reshape(B, c + m - 1, hop)
        A = torch.fft.rfft(blocks, n=n)  # (B, c + m - 1, n // 2 + 1)
        last = A[:, m - 1:]  # (B, c, F) spectrum of each frame's last block
        S = torch.addcmul(last.real.square(), last.imag, last.imag)  # |A|^2
        if m > 1:
            ext = seg.unfold(-1, hop + max_lag, hop)[:, : c + m - 2]  # (B, c + m - 2, hop + max_lag)
            cross = A[:, : c + m - 2].conj() * torch.fft.rfft(ext, n=n)  # (B, c + m - 2, F)
            S = S + cross[:, :c]
            for i in range(1, m - 1):
                S += cross[:, i:i + c]
        out.append(torch.fft.irfft(S, n=n)[..., : max_lag + 1])  # (B, c, max_lag + 1)
    return torch.cat(out, dim=1)


def frame_acf(y: Tensor, frame_length: int, hop: int, max_lag: int) -> tuple[Tensor, Tensor]:
    """Centred (zero-padded) frames' acf and raw frames: (B, N) -> ((B, T, max_lag + 1), (B, T, L)).

    Uses the block method when it applies, else one FFT per frame; both are exact up to rounding.
    """
    yp = pad_center(_as_batch(y), frame_length)
    frames = yp.unfold(-1, frame_length, hop)  # (B, T, L) view
    if blocked_ok(frame_length, hop, max_lag):
        return frame_acf_blocked(yp, frame_length, hop, max_lag), frames
    return frame_acf_direct(frames, max_lag), frames


def cmndf_from_acf(acf: Tensor, frames: Tensor, min_period: int, max_period: int) -> Tensor:
    """YIN's cumulative mean normalised difference, as librosa computes it.

    acf (B, T, >= max_period + 1), raw frames (B, T, L) -> (B, T, P) for periods
    min_period..max_period (P = max - min + 1).
    """
    k = torch.arange(1, max_period + 1, dtype=acf.dtype, device=acf.device)
    energy = frames[..., :max_period].square().cumsum(-1)  # (B, T, max_period)
    diff = 2.0 * (acf[..., :1] - acf[..., 1:max_period + 1]) - energy  # d(k), k = 1..max_period
    cum_mean = diff.cumsum(-1) / k
    num, den = diff[..., min_period - 1:], cum_mean[..., min_period - 1:]
    return num / (den + torch.finfo(acf.dtype).tiny)
