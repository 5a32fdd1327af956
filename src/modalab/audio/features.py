"""Batched time-frequency features in torch, on any device, with librosa's conventions.

Every function takes a batch ``y`` of shape ``(B, samples)`` (a 1-D tensor is treated as B = 1) and
returns a ``(B, ..., T)`` tensor with frames last, as librosa does. Defaults follow librosa 0.11:
frame 2048, hop 512, centred frames, zero ("constant") padding for the STFT, RMS and YIN, edge
padding for the zero-crossing rate, Slaney mel filters (``librosa.filters.mel``), MFCC = DCT-II
(ortho) of ``power_to_db``. ``power_to_db``'s ``top_db`` floor is taken per sample here (librosa
takes it over the whole array it is given, so only a single-clip call matches it).

``log_mel`` is Whisper's feature (16 kHz, n_fft 400, hop 160, reflect-padded centred STFT with the
last frame dropped, power, log10 clamped at 1e-10, floor at max - 8, (x + 4) / 4). Whisper takes the
max over the whole input tensor, so in a batch one loud clip raises the floor of every other clip:
``max_over="sample"`` (default) takes it per clip, which equals Whisper's one-clip-at-a-time output;
``max_over="batch"`` reproduces Whisper's batched call exactly.

``feature_bundle`` computes mel, log-mel (dB), MFCC, ZCR, RMS, centroid, rolloff and YIN F0 from one
framing of the signal and one STFT. Pitch: ``yin`` matches ``librosa.yin``; ``pyin`` is a batched
torch pYIN (same observation model as ``librosa.pyin``, Viterbi with a flat transition band so that
each step is a sliding max); ``pyin_librosa`` wraps librosa's for reference quality.
"""

from __future__ import annotations

import functools
import math

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor



def _as_batch(y: Tensor | np.ndarray) -> Tensor:
    y = torch.as_tensor(y)
    if y.dim() == 1:
        y = y.unsqueeze(0)
    if y.dim() != 2:
        raise ValueError(f"expected audio of shape (B, samples) or (samples,), got {tuple(y.shape)}")
    if not y.is_floating_point():
        raise TypeError(f"expected floating-point audio, got dtype {y.dtype}")
    return y


_TORCH_PAD = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}


def pad_center(y: Tensor, frame_length: int, pad_mode: str = "constant") -> Tensor:
    """Pad ``(B, N)`` by ``frame_length // 2`` on both sides (librosa's ``center=True``)."""
    if pad_mode not in _TORCH_PAD:
        raise ValueError(f"pad_mode={pad_mode!r}; expected one of {sorted(_TORCH_PAD)}")
    p = frame_length // 2
    if pad_mode == "constant":
        return F.pad(y, (p, p))
    return F.pad(y.unsqueeze(1), (p, p), mode=_TORCH_PAD[pad_mode]).squeeze(1)


def frame(y: Tensor, frame_length: int = 2048, hop_length: int = 512, center: bool = True,
          pad_mode: str = "constant") -> Tensor:
    """Frames of ``y``: (B, N) -> (B, T, frame_length), T = 1 + N // hop when centred."""
    y = _as_batch(y)
    if center:
        y = pad_center(y, frame_length, pad_mode)
    if y.shape[-1] < frame_length:
        raise ValueError(f"signal of {y.shape[-1]} samples is shorter than frame_length={frame_length}")
    return y.unfold(-1, frame_length, hop_length)  # (B, T, L)


def stft_from_frames(frames: Tensor, n_fft: int) -> Tensor:
    """Complex STFT of already-centred frames with a periodic Hann window: (B, T, L) -> (B, F, T)."""
    window = torch.hann_window(n_fft, periodic=True, dtype=frames.dtype, device=frames.device)
    return torch.fft.rfft(frames * window, n=n_fft).transpose(-1, -2)  # (B, F, T)


def spectrogram(y: Tensor, n_fft: int = 2048, hop_length: int = 512, power: float = 2.0,
                center: bool = True, pad_mode: str = "constant") -> Tensor:
    """|STFT|^power with a periodic Hann window: (B, N) -> (B, n_fft // 2 + 1, T)."""
    y = _as_batch(y)
    if center:
        y = pad_center(y, n_fft, pad_mode)
    window = torch.hann_window(n_fft, periodic=True, dtype=y.dtype, device=y.device)
    spec = torch.stft(y, n_fft, hop_length, window=window, center=False, return_complex=True)
    mag = spec.abs()
    return mag if power == 1.0 else mag.pow(power)


@functools.lru_cache(maxsize=32)
def _mel_np(sr: float, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                               dtype=np.float64)


def mel_filters(sr: float, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None,
                dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """Slaney-normalised mel filter bank from ``librosa.filters.mel``: (n_mels, n_fft // 2 + 1)."""
    return torch.as_tensor(_mel_np(float(sr), n_fft, n_mels, float(fmin), fmax), dtype=dtype,
                           device=device)


@functools.lru_cache(maxsize=16)
def _dct_np(n_out: int, n_in: int) -> np.ndarray:
    n = np.arange(n_in)
    k = np.arange(n_out)[:, None]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    basis[0] /= np.sqrt(2.0)
    return basis  # DCT-II, orthonormal (scipy norm="ortho"): (n_out, n_in)


def mel_from_power(S: Tensor, sr: float, n_mels: int = 128, fmin: float = 0.0,
                   fmax: float | None = None) -> Tensor:
    """Mel projection of a power spectrogram: (B, F, T) -> (B, n_mels, T)."""
    n_fft = 2 * (S.shape[-2] - 1)
    fb = mel_filters(sr, n_fft, n_mels, fmin, fmax, dtype=S.dtype, device=S.device)
    return torch.matmul(fb, S)


def mel_spectrogram(y: Tensor, sr: float = 22050, n_fft: int = 2048, hop_length: int = 512,
                    n_mels: int = 128, power: float = 2.0, fmin: float = 0.0,
                    fmax: float | None = None, center: bool = True,
                    pad_mode: str = "constant") -> Tensor:
    """librosa.feature.melspectrogram: (B, N) -> (B, n_mels, T)."""
    S = spectrogram(y, n_fft, hop_length, power, center, pad_mode)
    return mel_from_power(S, sr, n_mels, fmin, fmax)


def power_to_db(S: Tensor, amin: float = 1e-10, top_db: float | None = 80.0) -> Tensor:
    """10 log10(max(S, amin)) with ref 1, floored at (per-sample max - top_db): (B, ...) -> same."""
    db = 10.0 * torch.log10(S.clamp_min(amin))
    if top_db is not None:
        peak = db.flatten(1).amax(dim=1).view(-1, *([1] * (db.dim() - 1)))
        db = torch.maximum(db, peak - top_db)
    return db


def mfcc_from_db(S_db: Tensor, n_mfcc: int = 20) -> Tensor:
    """DCT-II (ortho) over the mel axis: (B, n_mels, T) -> (B, n_mfcc, T)."""
    basis = torch.as_tensor(_dct_np(n_mfcc, S_db.shape[-2]), dtype=S_db.dtype, device=S_db.device)
    return torch.matmul(basis, S_db)


def mfcc(y: Tensor, sr: float = 22050, n_mfcc: int = 20, n_fft: int = 2048, hop_length: int = 512,
         n_mels: int = 128, top_db: float | None = 80.0) -> Tensor:
    """librosa.feature.mfcc (per-sample top_db): (B, N) -> (B, n_mfcc, T)."""
    mel = mel_spectrogram(y, sr, n_fft, hop_length, n_mels)
    return mfcc_from_db(power_to_db(mel, top_db=top_db), n_mfcc)


def log_mel(y: Tensor, n_mels: int = 80, max_over: str = "sample", sr: int = 16000,
            n_fft: int = 400, hop_length: int = 160) -> Tensor:
    """Whisper's log-mel: (B, N) 16 kHz audio -> (B, n_mels, N // hop).

    ``max_over="sample"`` floors each clip at its own max - 8 (same as Whisper run clip by clip);
    ``"batch"`` uses the max of the whole tensor, as Whisper's batched ``log_mel_spectrogram`` does.
    """
    if max_over not in ("sample", "batch"):
        raise ValueError(f"max_over={max_over!r}; expected 'sample' or 'batch'")
    S = spectrogram(y, n_fft, hop_length, power=2.0, pad_mode="reflect")[..., :-1]  # (B, F, T)
    mel = mel_from_power(S, sr, n_mels)
    logs = torch.log10(mel.clamp_min(1e-10))
    if max_over == "batch":
        peak = logs.amax()
    else:
        peak = logs.flatten(1).amax(dim=1).view(-1, 1, 1)
    return (torch.maximum(logs, peak - 8.0) + 4.0) / 4.0


def zero_crossing_rate(y: Tensor, frame_length: int = 2048, hop_length: int = 512,
                       center: bool = True, threshold: float = 1e-10) -> Tensor:
    """librosa.feature.zero_crossing_rate (edge padding): (B, N) -> (B, 1, T).

    Computed with one cumulative sum of sign changes, so it costs O(N) whatever the frame size.
    """
    y = _as_batch(y)
    if center:
        y = pad_center(y, frame_length, "edge")
    y = torch.where(y.abs() <= threshold, torch.zeros_like(y), y)
    s = torch.signbit(y)
    change = F.pad((s[..., 1:] != s[..., :-1]).to(torch.int32), (1, 0))  # change[i]: i vs i-1
    csum = F.pad(change.cumsum(-1), (1, 0))  # csum[i] = sum(change[:i])
    n_frames = 1 + (y.shape[-1] - frame_length) // hop_length
    starts = torch.arange(n_frames, device=y.device) * hop_length
    counts = csum[..., starts + frame_length] - csum[..., starts + 1]  # first sample of a frame is 0
    return (counts.to(y.dtype) / frame_length).unsqueeze(1)


def rms_from_frames(frames: Tensor) -> Tensor:
    """Root mean square of raw frames: (B, T, L) -> (B, 1, T)."""
    return frames.pow(2).mean(-1).sqrt().unsqueeze(1)


def rms(y: Tensor, frame_length: int = 2048, hop_length: int = 512, center: bool = True,
        pad_mode: str = "constant") -> Tensor:
    """librosa.feature.rms from samples: (B, N) -> (B, 1, T)."""
    return rms_from_frames(frame(y, frame_length, hop_length, center, pad_mode))


def _fft_freqs(sr: float, n_freq: int, like: Tensor) -> Tensor:
    return torch.linspace(0, sr / 2, n_freq, dtype=like.dtype, device=like.device)


def centroid_from_mag(S: Tensor, sr: float) -> Tensor:
    """Spectral centroid of a magnitude spectrogram: (B, F, T) -> (B, 1, T)."""
    freqs = _fft_freqs(sr, S.shape[-2], S).view(-1, 1)
    norm = S.sum(-2, keepdim=True)
    tiny = torch.finfo(S.dtype).tiny
    norm = torch.where(norm < tiny, torch.ones_like(norm), norm)  # librosa leaves silent columns
    return (freqs * S).sum(-2, keepdim=True) / norm


def rolloff_from_mag(S: Tensor, sr: float, roll_percent: float = 0.85) -> Tensor:
    """Lowest frequency below which ``roll_percent`` of the magnitude lies: (B, F, T) -> (B, 1, T)."""
    if not 0.0 < roll_percent < 1.0:
        raise ValueError(f"roll_percent={roll_percent}; expected a value in (0, 1)")
    total = S.cumsum(-2)
    reached = total >= roll_percent * total[..., -1:, :]
    idx = reached.to(torch.int8).argmax(-2, keepdim=True)  # first bin reaching the threshold
    return _fft_freqs(sr, S.shape[-2], S)[idx]


def spectral_centroid(y: Tensor, sr: float = 22050, n_fft: int = 2048,
                      hop_length: int = 512) -> Tensor:
    """librosa.feature.spectral_centroid: (B, N) -> (B, 1, T)."""
    return centroid_from_mag(spectrogram(y, n_fft, hop_length, power=1.0), sr)


def spectral_rolloff(y: Tensor, sr: float = 22050, n_fft: int = 2048, hop_length: int = 512,
                     roll_percent: float = 0.85) -> Tensor:
    """librosa.feature.spectral_rolloff: (B, N) -> (B, 1, T)."""
    return rolloff_from_mag(spectrogram(y, n_fft, hop_length, power=1.0), sr, roll_percent)


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
    """YIN's cumulative mean normalised difference, as librosa computes it.

    (B, T, L) raw frames -> (B, T, P) for periods min_period..max_period (P = max - min + 1).
    The autocorrelation uses an FFT of size >= L + max_period (enough for lags <= max_period
    without wrap-around), in chunks of ``chunk`` frames to bound memory.
    """
    import scipy.fft

    B, T, L = frames.shape
    n = scipy.fft.next_fast_len(L + max_period, real=True)
    flat = frames.reshape(B * T, L)  # (N, L)
    k = torch.arange(1, max_period + 1, dtype=frames.dtype, device=frames.device)
    out = []
    for s in range(0, flat.shape[0], chunk):
        x = flat[s:s + chunk]
        spec = torch.view_as_real(torch.fft.rfft(x, n=n)).square().sum(-1)  # |X|^2
        acf = torch.fft.irfft(spec, n=n)[:, : max_period + 1]
        energy = x[:, :max_period].square().cumsum(-1)  # (n, max_period)
        diff = 2.0 * (acf[:, :1] - acf[:, 1:]) - energy  # d(k), k = 1..max_period
        cum_mean = diff.cumsum(-1) / k
        num, den = diff[:, min_period - 1:], cum_mean[:, min_period - 1:]
        out.append(num / (den + torch.finfo(frames.dtype).tiny))
    return torch.cat(out).view(B, T, -1)  # (B, T, P)


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


def yin_from_frames(frames: Tensor, sr: float, fmin: float, fmax: float,
                    trough_threshold: float = 0.1) -> tuple[Tensor, Tensor]:
    """YIN on raw frames (B, T, L) -> (f0 Hz (B, T), aperiodicity = CMNDF at the period (B, T))."""
    min_p, max_p = _period_range(sr, fmin, fmax, frames.shape[-1])
    d = cmndf(frames, min_p, max_p)  # (B, T, P)
    shift = _parabolic_shift(d)
    below = _troughs(d) & (d < trough_threshold)
    first = below.to(torch.int8).argmax(-1, keepdim=True)
    idx = torch.where(below.any(-1, keepdim=True), first, d.argmin(-1, keepdim=True))
    period = min_p + idx + shift.gather(-1, idx)
    return (sr / period).squeeze(-1), d.gather(-1, idx).squeeze(-1)


def yin(y: Tensor, fmin: float, fmax: float, sr: float = 22050, frame_length: int = 2048,
        hop_length: int | None = None, trough_threshold: float = 0.1) -> Tensor:
    """librosa.yin, batched: (B, N) -> F0 in Hz, (B, T)."""
    frames = frame(y, frame_length, hop_length or frame_length // 4)
    return yin_from_frames(frames, sr, fmin, fmax, trough_threshold)[0]


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
    frames = frame(y, frame_length, hop)  # (B, T, L)
    B, T, _ = frames.shape
    min_p, max_p = _period_range(sr, fmin, fmax, frame_length)
    d = cmndf(frames, min_p, max_p).flatten(0, 1)  # (B*T, P)
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


def feature_bundle(y: Tensor, sr: float = 22050, n_fft: int = 2048, hop_length: int = 512,
                   n_mels: int = 128, n_mfcc: int = 20, fmin: float = 65.0, fmax: float = 2093.0,
                   roll_percent: float = 0.85, top_db: float | None = 80.0) -> dict[str, Tensor]:
    """Mel, log-mel (dB), MFCC, ZCR, RMS, centroid, rolloff and YIN F0 from ONE framing + STFT.

    Each value equals the matching single-feature function (librosa defaults); all share T frames.
    Returns a dict of (B, n_mels | n_mfcc | 1, T) tensors, and ``f0`` of shape (B, T).
    """
    frames = frame(y, n_fft, hop_length)  # (B, T, L), zero-padded as librosa's stft / rms / yin
    spec = stft_from_frames(frames, n_fft)  # (B, F, T) complex
    power = torch.view_as_real(spec).square().sum(-1)  # |X|^2 without a complex abs
    mag = power.sqrt()
    mel = mel_from_power(power, sr, n_mels, fmax=None)
    mel_db = power_to_db(mel, top_db=top_db)
    return {
        "mel": mel,
        "log_mel": mel_db,
        "mfcc": mfcc_from_db(mel_db, n_mfcc),
        "zcr": zero_crossing_rate(y, n_fft, hop_length),
        "rms": rms_from_frames(frames),
        "centroid": centroid_from_mag(mag, sr),
        "rolloff": rolloff_from_mag(mag, sr, roll_percent),
        "f0": yin_from_frames(frames, sr, fmin, fmax)[0],
    }


def frame_pyramid(y: Tensor, sr: int = 16000, windows: tuple[float, float, float] = (0.025, 0.25, 2.0),
                  n_mels: int = 64) -> dict[str, tuple[Tensor, float]]:
    """Multi-scale log-mel pyramid (chapter 5.3.4): short 10-30 ms, medium 100-500 ms, long 1-5 s.

    The short scale is a mel power spectrogram with window ``windows[0]`` and hop = window / 2;
    medium and long scales average its power over windows of ``windows[1]`` and ``windows[2]``
    seconds (hop = half a window), then take log10, so the pyramid costs one STFT.
    Returns {"short" | "medium" | "long": (log-mel (B, n_mels, T_s), hop in seconds)}.
    """
    ranges = {"short": (0.010, 0.030), "medium": (0.100, 0.500), "long": (1.0, 5.0)}
    for (name, (lo, hi)), w in zip(ranges.items(), windows):
        if not lo <= w <= hi:
            raise ValueError(f"frame_pyramid: {name} window {w} s outside the chapter's [{lo}, {hi}] s")
    n_fft = int(round(windows[0] * sr))
    hop = n_fft // 2
    mel = mel_spectrogram(y, sr, n_fft, hop, n_mels)  # (B, M, T)
    out = {"short": (torch.log10(mel.clamp_min(1e-10)), hop / sr)}
    for name, w in zip(("medium", "long"), windows[1:]):
        k = max(1, int(round(w * sr / hop)))
        if mel.shape[-1] < k:
            raise ValueError(f"frame_pyramid: clip of {y.shape[-1] / sr:.2f} s is shorter than the "
                             f"{name} window of {w} s")
        pooled = F.avg_pool1d(mel, kernel_size=k, stride=max(1, k // 2))  # (B, M, T_s)
        out[name] = (torch.log10(pooled.clamp_min(1e-10)), max(1, k // 2) * hop / sr)
    return out


def prosody(y: Tensor, sr: int = 16000, fmin: float = 65.0, fmax: float = 500.0,
            frame_length: int = 1024, hop_length: int = 160, silence_db: float = -40.0) -> dict[str, Tensor]:
    """Prosody bundle (chapter 5.3.1): F0 contour, energy contour, voiced ratio, speaking-rate proxy.

    Returns ``f0`` (B, T) Hz with 0 where unvoiced (aperiodic or silent), ``energy_db`` (B, T) RMS in
    dB, ``voiced_ratio`` (B,) and ``rate`` (B,): energy peaks (syllable-nucleus proxy: local maxima
    of the smoothed energy at least 6 dB above the clip's median and above ``silence_db``) per second.
    """
    frames = frame(y, frame_length, hop_length)  # (B, T, L)
    f0, aper = yin_from_frames(frames, sr, fmin, fmax)
    energy_db = 20.0 * torch.log10(rms_from_frames(frames).squeeze(1).clamp_min(1e-5))  # (B, T)
    voiced = (aper < 0.2) & (energy_db > silence_db)
    smooth = F.avg_pool1d(energy_db.unsqueeze(1), 5, 1, 2, count_include_pad=False).squeeze(1)
    left = F.pad(smooth[:, :-1], (1, 0), value=-math.inf)
    right = F.pad(smooth[:, 1:], (0, 1), value=-math.inf)
    median = smooth.median(dim=1, keepdim=True).values
    peaks = (smooth > left) & (smooth >= right) & (smooth > median + 6.0) & (smooth > silence_db)
    duration = y.shape[-1] / sr
    return {
        "f0": torch.where(voiced, f0, torch.zeros_like(f0)),
        "energy_db": energy_db,
        "voiced_ratio": voiced.to(y.dtype).mean(1),
        "rate": peaks.to(y.dtype).sum(1) / duration,
    }
