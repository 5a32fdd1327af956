"""Pitch (F0) in torch, batched: YIN as ``librosa.yin`` and a fast pYIN with librosa's model.

- ``cmndf`` / ``cmndf_signal``: YIN's cumulative mean normalised difference from an FFT
  autocorrelation (per frame, or from hop blocks shared by overlapping frames: ``autocorr.py``);
- ``yin`` / ``yin_from_frames`` / ``yin_from_cmndf``: first trough under the threshold, else the
  global minimum, with parabolic refinement — librosa.yin exactly, all frames at once;
- ``pyin``: librosa.pyin's observation model (beta threshold prior, Boltzmann trough prior, pitch
  bins, voiced/unvoiced halves) with a Viterbi whose triangle transition is approximated by flat
  bands, so that each step is a few sliding maxima (see docs/audio.md, "pYIN in torch");
- ``pyin_librosa``: librosa's pYIN for reference quality.

Split out of ``features.py`` (which re-exports these names); all take ``(B, samples)`` audio.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from modalab._optional import lazy
from modalab.audio.autocorr import cmndf_from_acf, frame_acf, frame_acf_direct

librosa = lazy("librosa")  # imported on first use (pip install 'modalab[audio]')


def _period_range(sr: float, fmin: float, fmax: float, frame_length: int) -> tuple[int, int]:
    if not 0 < fmin < fmax <= sr / 2:
        raise ValueError(f"pitch range fmin={fmin}, fmax={fmax} must satisfy 0 < fmin < fmax <= sr/2 "
                         f"= {sr / 2}")
    min_period = int(math.floor(sr / fmax))
    max_period = min(int(math.ceil(sr / fmin)), frame_length - 1)
    if sr / fmin >= frame_length - 1:
        raise ValueError(f"fmin={fmin} is too low for frame_length={frame_length} at sr={sr}; "
                         f"use fmin > {sr / (frame_length - 1):.1f} or a longer frame")
    return min_period, max_period


def cmndf(frames: Tensor, min_period: int, max_period: int, chunk: int = 4096) -> Tensor:
    """YIN's cumulative mean normalised difference of raw frames, one FFT per frame.

    (B, T, L) raw frames -> (B, T, P) for periods min_period..max_period (P = max - min + 1).
    """
    acf = frame_acf_direct(frames, max_period, chunk)  # (B, T, max_period + 1)
    return cmndf_from_acf(acf, frames, min_period, max_period)


def cmndf_signal(y: Tensor, sr: float, fmin: float, fmax: float, frame_length: int,
                 hop_length: int) -> tuple[Tensor, int]:
    """CMNDF of the centred frames of ``y``: (B, N) -> ((B, T, P), min_period).

    Frames are librosa's (zero-padded, centred); the autocorrelation uses hop blocks when the
    geometry allows (``autocorr.frame_acf``), which is what makes batched YIN cheap.
    """
    min_p, max_p = _period_range(sr, fmin, fmax, frame_length)
    acf, frames = frame_acf(y, frame_length, hop_length, max_p)
    return cmndf_from_acf(acf, frames, min_p, max_p), min_p


def _parabolic_shift(d: Tensor) -> Tensor:
    """Per-bin parabolic-interpolation offsets of the minimum (0 at the ends): (..., P) -> same."""
    a = d[..., 2:] + d[..., :-2] - 2 * d[..., 1:-1]
    b = (d[..., 2:] - d[..., :-2]) / 2
    shift = torch.where(b.abs() >= a.abs(), torch.zeros_like(a), -b / a)
    return F.pad(shift, (1, 1))


def _troughs(d: Tensor) -> Tensor:
    """librosa.util.localmin along the last axis, with the first bin a trough if d[0] < d[1]."""
    inner = (d[..., 1:-1] < d[..., :-2]) & (d[..., 1:-1] <= d[..., 2:])
    return torch.cat([d[..., :1] < d[..., 1:2], inner, d[..., -1:] < d[..., -2:-1]], dim=-1)


def yin_from_cmndf(d: Tensor, sr: float, min_period: int,
                   trough_threshold: float = 0.1) -> tuple[Tensor, Tensor]:
    """YIN's period pick on a CMNDF (B, T, P) -> (f0 Hz (B, T), aperiodicity = CMNDF at the period).

    First trough under the threshold, else the global minimum, refined by a parabola; all frames
    at once (no per-frame loop).
    """
    below = _troughs(d) & (d < trough_threshold)
    first = below.to(torch.int8).argmax(-1, keepdim=True)
    idx = torch.where(below.any(-1, keepdim=True), first, d.argmin(-1, keepdim=True))  # (B, T, 1)
    P = d.shape[-1]
    inner = (idx > 0) & (idx < P - 1)  # the ends get no refinement, as in _parabolic_shift
    left, mid, right = (d.gather(-1, (idx + o).clamp(0, P - 1)) for o in (-1, 0, 1))
    a = right + left - 2 * mid
    b = (right - left) / 2
    shift = torch.where(inner & (b.abs() < a.abs()), -b / a, torch.zeros_like(a))
    period = min_period + idx + shift
    return (sr / period).squeeze(-1), mid.squeeze(-1)


def yin_from_frames(frames: Tensor, sr: float, fmin: float, fmax: float,
                    trough_threshold: float = 0.1) -> tuple[Tensor, Tensor]:
    """YIN on raw frames (B, T, L) -> (f0 Hz (B, T), aperiodicity = CMNDF at the period (B, T))."""
    min_p, max_p = _period_range(sr, fmin, fmax, frames.shape[-1])
    return yin_from_cmndf(cmndf(frames, min_p, max_p), sr, min_p, trough_threshold)


def yin(y: Tensor, fmin: float, fmax: float, sr: float = 22050, frame_length: int = 2048,
        hop_length: int | None = None, trough_threshold: float = 0.1) -> Tensor:
    """librosa.yin, batched: (B, N) -> F0 in Hz, (B, T)."""
    d, min_p = cmndf_signal(y, sr, fmin, fmax, frame_length, hop_length or frame_length // 4)
    return yin_from_cmndf(d, sr, min_p, trough_threshold)[0]


def _pyin_observations(d: Tensor, shift: Tensor, sr: float, min_p: int, fmin: float, n_bins: int,
                       bins_per_semitone: int, n_thresholds: int, beta: tuple[float, float],
                       boltzmann: float, no_trough_prob: float, chunk: int = 4096) -> Tensor:
    """pYIN observation probabilities of voiced pitch bins: CMNDF (N, P) -> (N, n_bins)."""
    import scipy.stats  # local: only the pitch tracker needs it

    thr_np = np.linspace(0, 1, n_thresholds + 1)
    beta_np = np.diff(scipy.stats.beta.cdf(thr_np, *beta))
    beta_cum = torch.as_tensor(np.r_[0.0, np.cumsum(beta_np)], dtype=d.dtype, device=d.device)
    # thresholds whose prior mass (and all above) is < 1e-9 change no probability by more than that
    keep = int(np.searchsorted(np.cumsum(beta_np), 1.0 - 1e-9)) + 1
    thr = torch.as_tensor(thr_np[1:keep + 1], dtype=d.dtype, device=d.device)  # (K,)
    beta_p = torch.as_tensor(beta_np[:keep], dtype=d.dtype, device=d.device)
    lam = boltzmann
    obs = torch.zeros(d.shape[0], n_bins, dtype=d.dtype, device=d.device)
    for s in range(0, d.shape[0], chunk):
        dc, sc = d[s:s + chunk], shift[s:s + chunk]
        trough = _troughs(dc)
        cand = trough & (dc < thr[-1])  # troughs above every kept threshold get no mass
        m = max(int(cand.sum(-1).max()), 1)
        slot = torch.where(cand, cand.cumsum(-1) - 1, torch.full_like(dc, m, dtype=torch.long))
        h = torch.full((dc.shape[0], m + 1), math.inf, dtype=d.dtype, device=d.device)
        h.scatter_(1, slot, torch.where(cand, dc, torch.full_like(dc, math.inf)))
        pidx = torch.zeros(dc.shape[0], m + 1, dtype=torch.long, device=d.device)
        pidx.scatter_(1, slot, torch.arange(dc.shape[-1], device=d.device).expand_as(dc))
        h, pidx = h[:, :m], pidx[:, :m]  # (n, M) compacted troughs in period order
        below = h.unsqueeze(-1) < thr  # (n, M, K)
        pos = below.cumsum(1) - 1
        n_tr = below.sum(1, keepdim=True).clamp_min(1)
        pmf = (1 - math.exp(-lam)) * torch.exp(-lam * pos) / (1 - torch.exp(-lam * n_tr))
        probs = (pmf * below * beta_p).sum(-1)  # (n, M)
        # the global-minimum trough also takes no_trough_prob of the thresholds it lies above
        tr_h = torch.where(trough, dc, torch.full_like(dc, math.inf))
        g = tr_h.argmin(-1, keepdim=True)  # (n, 1) period index
        n_above = (dc.gather(-1, g) >= thr).sum(-1)
        extra = no_trough_prob * beta_cum[n_above] * trough.any(-1)
        period = (min_p + pidx + sc.gather(-1, pidx)).to(d.dtype)
        bins = (12 * bins_per_semitone * torch.log2(sr / period / fmin)).round()
        bins = bins.clamp(0, n_bins - 1).long()
        gbin = (12 * bins_per_semitone * torch.log2(
            sr / (min_p + g + sc.gather(-1, g)).to(d.dtype) / fmin)).round().clamp(0, n_bins - 1).long()
        o = torch.zeros(dc.shape[0], n_bins, dtype=d.dtype, device=d.device)
        o.scatter_add_(1, bins, probs)
        o.scatter_add_(1, gbin, extra.unsqueeze(-1))
        obs[s:s + chunk] = o
    return obs


def _viterbi_band(log_obs: Tensor, half: int, switch_prob: float, levels: int) -> Tensor:
    """Max-product decode over (voiced | unvoiced) x pitch-bin states with a banded pitch kernel.

    log_obs: (B, T, 2, n). The pitch kernel is log of librosa's triangle (half-width ``half`` bins,
    rows normalised), approximated from below by ``levels`` flat bands (radius r_l, value
    log(1 - r_l / (half + 1))) plus the exact 0 for staying on a bin. The forward pass keeps only
    maxima (a sparse table of window maxima shared by all bands); the backward pass recomputes the
    best predecessor of the chosen state in its band. Returns states (B, T) in [0, 2n).
    """
    B, T, _, n = log_obs.shape
    dev, dt = log_obs.device, log_obs.dtype
    radii = sorted({max(1, round(half * (i + 1) / levels)) for i in range(levels)})
    consts = [math.log(1 - r / (half + 1)) for r in radii]
    kern = np.full(2 * half + 1, -np.inf)  # staircase log-kernel over offsets -half..half
    for r, c in zip(reversed(radii), reversed(consts)):
        kern[half - r: half + r + 1] = c
    kern[half] = 0.0
    w = 1 - np.abs(np.arange(-half, half + 1)) / (half + 1)
    log_z = torch.as_tensor(np.log(np.convolve(np.ones(n), w, mode="same")), dtype=dt, device=dev)
    stay, move = math.log(1 - switch_prob), math.log(switch_prob)
    deltas = torch.empty_like(log_obs)  # (B, T, 2, n)
    deltas[:, 0] = log_obs[:, 0]  # uniform initial distribution
    top = max(radii)
    for t in range(1, T):
        src = deltas[:, t - 1] - log_z  # (B, 2, n)
        table = [F.pad(src, (top, top), value=-math.inf)]  # table[k][i] = max(xp[i : i + 2^k])
        while 2 ** len(table) <= 2 * top + 1:
            prev, step = table[-1], 2 ** (len(table) - 1)
            table.append(torch.maximum(prev[..., :-step], prev[..., step:]))
        m = src
        for r, c in zip(radii, consts):
            L = 2 * r + 1
            k = L.bit_length() - 1
            lo = top - r
            band = torch.maximum(table[k][..., lo:lo + n], table[k][..., lo + L - 2 ** k:lo + L - 2 ** k + n])
            m = torch.maximum(m, band + c)
        deltas[:, t] = torch.maximum(m + stay, m.flip(1) + move) + log_obs[:, t]
    kern_t = torch.as_tensor(kern, dtype=dt, device=dev)
    offs = torch.arange(-half, half + 1, device=dev)
    sw = torch.tensor([[stay, move], [move, stay]], dtype=dt, device=dev)  # [to half, from half]
    states = torch.empty(B, T, dtype=torch.long, device=dev)
    states[:, -1] = deltas[:, -1].flatten(1).argmax(-1)
    for t in range(T - 1, 0, -1):
        cur = states[:, t]
        half_to, j = cur // n, cur % n
        cand = j.unsqueeze(1) + offs  # (B, 2h+1) source bins
        valid = (cand >= 0) & (cand < n)
        candc = cand.clamp(0, n - 1)
        prev = deltas[:, t - 1].gather(2, candc.unsqueeze(1).expand(B, 2, -1)) - log_z[candc].unsqueeze(1)
        score = prev + kern_t + sw[half_to].unsqueeze(-1)  # (B, 2, 2h+1)
        score = score.masked_fill(~valid.unsqueeze(1), -math.inf)
        best = score.flatten(1).argmax(-1)
        states[:, t - 1] = (best // cand.shape[1]) * n + candc.gather(1, (best % cand.shape[1]).unsqueeze(1)).squeeze(1)
    return states


def pyin(y: Tensor, fmin: float, fmax: float, sr: float = 22050, frame_length: int = 2048,
         hop_length: int | None = None, n_thresholds: int = 100, beta: tuple[float, float] = (2, 18),
         boltzmann: float = 2.0, resolution: float = 0.1, max_transition_rate: float = 35.92,
         switch_prob: float = 0.01, no_trough_prob: float = 0.01,
         levels: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    """Batched pYIN in torch: (B, N) -> f0 (B, T) Hz (NaN unvoiced), voiced flag, voiced prob.

    Same observation model as ``librosa.pyin`` (beta threshold prior, Boltzmann trough prior, pitch
    bins of ``resolution`` semitones, voiced/unvoiced halves, row-normalised triangle transition).
    The one change: the triangle is approximated from below by ``levels`` flat bands, so a Viterbi
    step is a few sliding maxima (O(bins log band)) instead of a dense (bins x bins) product;
    ``levels=8`` reproduces librosa's voicing decisions on the test signals, more levels converge to
    the exact triangle. Candidate pitches are summed (not overwritten) when two fall in one bin.
    """
    hop = hop_length or frame_length // 4
    d, min_p = cmndf_signal(y, sr, fmin, fmax, frame_length, hop)  # (B, T, P)
    B, T, _ = d.shape
    d = d.flatten(0, 1)  # (B*T, P)
    bps = int(math.ceil(1.0 / resolution))
    n_bins = int(math.floor(12 * bps * math.log2(fmax / fmin))) + 1
    obs_v = _pyin_observations(d, _parabolic_shift(d), sr, min_p, fmin, n_bins, bps, n_thresholds,
                               beta, boltzmann, no_trough_prob).view(B, T, n_bins)
    voiced_prob = obs_v.sum(-1).clamp(0, 1)  # (B, T)
    obs_u = ((1 - voiced_prob) / n_bins).unsqueeze(-1).expand_as(obs_v)
    log_obs = torch.log(torch.cat([obs_v, obs_u], dim=-1).clamp_min(1e-30))  # (B, T, 2n)
    half = round(max_transition_rate * 12 * hop / sr) * bps // 2  # librosa's triangle half-width
    states = _viterbi_band(log_obs.view(B, T, 2, n_bins), half, switch_prob, levels)
    voiced = states < n_bins
    freqs = fmin * 2 ** (torch.arange(n_bins, device=d.device, dtype=d.dtype) / (12 * bps))
    f0 = freqs[states % n_bins]
    return torch.where(voiced, f0, torch.full_like(f0, math.nan)), voiced, voiced_prob


def pyin_librosa(y: np.ndarray | Tensor, fmin: float, fmax: float, sr: float = 22050,
                 frame_length: int = 2048, hop_length: int | None = None):
    """Reference-quality pYIN through librosa (CPU, numpy): returns (f0, voiced_flag, voiced_prob).

    f0 is NaN where unvoiced; arrays have shape (..., T).
    """
    y_np = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    return librosa.pyin(y_np, fmin=fmin, fmax=fmax, sr=sr, frame_length=frame_length,
                        hop_length=hop_length)
