"""SpecAugment (Park et al. 2019) on batched spectrograms: time warp, frequency and time masks.

Policies from the paper (W, F, mF, T, p, mT):

    LB (80, 27, 1, 100, 1.0, 1)   LD (80, 27, 2, 100, 1.0, 2)
    SM (40, 15, 2,  70, 0.2, 2)   SS (40, 27, 2,  70, 0.2, 2)

The paper's F is in channels of an 80-channel log-mel filterbank (``Policy.ref_bins``). On a
spectrogram with nu channels, F is scaled to round(F * nu / ref_bins), so a mask covers the same
share of the band as in the paper (F = 27 on 32 mel bands would otherwise hide up to 84% of it,
against 34% on 80: issue 18, branch h57, found the unscaled policies erasing short events); with
nu = 80 nothing changes. The time parameters are in 10 ms frames, as the front end's.

Each frequency mask has width f ~ U[0, F] and start f0 ~ U[0, nu - f); each time mask has width
t ~ U[0, min(T, p * tau)] and start t0 ~ U[0, tau - t), drawn independently per sample. Time warp
moves the frame at a random centre w0 in [W, tau - W) by w ~ U[-W, W] and resamples each half
linearly (a 1-D version of the paper's sparse image warp). A ``torch.Generator`` makes it exact to
repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Policy:
    W: int  # time-warp parameter (frames)
    F: int  # max frequency-mask width (bins)
    mF: int  # number of frequency masks
    T: int  # max time-mask width (frames)
    p: float  # time-mask upper bound as a fraction of the clip length
    mT: int  # number of time masks
    ref_bins: int = 80  # the filterbank size F was set for (the paper's 80 log-mel channels)

    def freq_width(self, n_bins: int) -> int:
        """F scaled to a spectrogram with ``n_bins`` channels (at least 1)."""
        return max(1, round(self.F * n_bins / self.ref_bins))


POLICIES: dict[str, Policy] = {
    "LB": Policy(80, 27, 1, 100, 1.0, 1),
    "LD": Policy(80, 27, 2, 100, 1.0, 2),
    "SM": Policy(40, 15, 2, 70, 0.2, 2),
    "SS": Policy(40, 27, 2, 70, 0.2, 2),
}


def _uniform_int(low: Tensor | int, high: Tensor | int, shape: tuple[int, ...], gen: torch.Generator | None,
                 device: torch.device) -> Tensor:
    """Integers uniform in [low, high] inclusive (elementwise bounds)."""
    u = torch.rand(shape, generator=gen, device="cpu").to(device)
    low_t = torch.as_tensor(low, device=device)
    high_t = torch.as_tensor(high, device=device)
    return (low_t + torch.floor(u * (high_t - low_t + 1).clamp_min(1))).long()


def mask_along(spec: Tensor, dim: int, max_width: Tensor | int, n_masks: int,
               gen: torch.Generator | None = None, value: float = 0.0) -> tuple[Tensor, Tensor]:
    """Apply ``n_masks`` random masks of width U[0, max_width] along ``dim`` (-2 freq, -1 time).

    spec: (B, F, T). ``max_width`` may be a per-sample (B,) tensor. Returns (masked spec, boolean
    mask (B, size) of the masked positions along ``dim``).
    """
    B, size = spec.shape[0], spec.shape[dim]
    dev = spec.device
    maxw = torch.as_tensor(max_width, device=dev).expand(B).clamp(0, size)
    pos = torch.arange(size, device=dev)
    mask = torch.zeros(B, size, dtype=torch.bool, device=dev)
    for _ in range(n_masks):
        w = _uniform_int(0, maxw, (B,), gen, dev)  # (B,)
        start = _uniform_int(0, (size - w - 1).clamp_min(0), (B,), gen, dev)
        mask |= (pos >= start[:, None]) & (pos < (start + w)[:, None])
    shape = (B, size, 1) if dim in (-2, 1) else (B, 1, size)
    return spec.masked_fill(mask.view(shape), value), mask


def time_warp(spec: Tensor, W: int, gen: torch.Generator | None = None) -> Tensor:
    """Warp time: frame w0 moves to w0 + w, w ~ U[-W, W], each side stretched linearly.

    spec: (B, F, T) -> (B, F, T). Clips with T <= 2W are returned unchanged.
    """
    B, Fq, T = spec.shape
    if W <= 0 or T <= 2 * W:
        return spec
    dev = spec.device
    w0 = _uniform_int(W, T - W - 1, (B,), gen, dev).to(spec.dtype)  # (B,)
    w = _uniform_int(-W, W, (B,), gen, dev).to(spec.dtype)
    t = torch.arange(T, device=dev, dtype=spec.dtype).expand(B, T)
    new_c = (w0 + w)[:, None]
    # output frame t reads input position src(t): piecewise linear, src(new_c) = w0
    left = t * w0[:, None] / new_c.clamp_min(1)
    right = w0[:, None] + (t - new_c) * (T - 1 - w0[:, None]) / (T - 1 - new_c).clamp_min(1)
    src = torch.where(t <= new_c, left, right).clamp(0, T - 1)
    lo = src.floor().long().clamp(max=T - 2)
    frac = (src - lo).unsqueeze(1)  # (B, 1, T)
    a = spec.gather(2, lo.unsqueeze(1).expand(B, Fq, T))
    b = spec.gather(2, (lo + 1).unsqueeze(1).expand(B, Fq, T))
    return a + frac * (b - a)


def spec_augment(spec: Tensor, policy: str | Policy = "LD", warp: bool = False,
                 gen: torch.Generator | None = None, value: float | None = None,
                 return_masks: bool = False):
    """SpecAugment on (B, F, T) spectrograms with a named or custom policy.

    ``value`` fills masked cells (default: 0, i.e. the mean of normalised features). Time-mask width
    is capped at min(T, p * tau) per clip. With ``return_masks`` also returns (freq_mask (B, F),
    time_mask (B, T)) booleans.
    """
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(f"unknown SpecAugment policy {policy!r}; expected one of {sorted(POLICIES)}")
        policy = POLICIES[policy]
    if spec.dim() != 3:
        raise ValueError(f"spec_augment expects (B, F, T), got shape {tuple(spec.shape)}")
    fill = 0.0 if value is None else value
    out = time_warp(spec, policy.W, gen) if warp else spec
    out, fmask = mask_along(out, -2, policy.freq_width(spec.shape[-2]), policy.mF, gen, fill)
    t_cap = min(policy.T, int(policy.p * spec.shape[-1]))
    out, tmask = mask_along(out, -1, t_cap, policy.mT, gen, fill)
    return (out, fmask, tmask) if return_masks else out


class SpecAugment(torch.nn.Module):
    """Module wrapper: applies ``spec_augment`` in training mode only."""

    def __init__(self, policy: str | Policy = "LD", warp: bool = False, seed: int | None = None):
        super().__init__()
        self.policy, self.warp = policy, warp
        self.gen = torch.Generator().manual_seed(seed) if seed is not None else None

    def forward(self, spec: Tensor) -> Tensor:  # (B, F, T) -> (B, F, T)
        return spec_augment(spec, self.policy, self.warp, self.gen) if self.training else spec

