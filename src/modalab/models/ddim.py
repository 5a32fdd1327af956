"""DDIM sampling and classifier-free guidance as plain functions (used by
``models/unified.GaussianDiffusion``).

- ``ddim_timesteps(T, steps)``: the descending integer timesteps a DDIM run visits, T - 1 ... 0.
- ``ddim_loop(eps_fn, alpha_bar, x, timesteps, eta, clip)``: DDIM (Song et al. 2021, eq. 12) from
  x at ``timesteps[0]`` to the x0 estimate at t = 0 (the last update uses abar_prev = 1, so the
  result is the model's x0 prediction at the last visited timestep). ``clip`` clamps the x0
  prediction to the data range [-1, 1] and re-derives epsilon from it.
- ``cfg_combine(eps_c, eps_u, scale, rescale)``: eps_u + scale (eps_c - eps_u) (Ho & Salimans 2022);
  ``rescale`` phi > 0 pulls each sample's guided prediction back to the conditional prediction's
  standard deviation (Lin et al. 2024, sec. 3.4: x = phi * x * std_c / std_g + (1 - phi) * x).
- ``in_interval(t, interval)``: guidance applied only at timesteps inside [lo, hi]
  (Kynkaenniemi et al. 2024, "Applying guidance in a limited interval"); outside it the sampler
  uses the conditional prediction alone (one network call instead of two).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def ddim_timesteps(T: int, steps: int) -> Tensor:
    """Descending, distinct integer timesteps from T - 1 to 0: (steps,) long."""
    if not 1 <= steps <= T:
        raise ValueError(f"ddim: steps={steps}; expected 1 <= steps <= timesteps={T}")
    return torch.linspace(T - 1, 0, steps).round().long()


def cfg_combine(eps_c: Tensor, eps_u: Tensor, scale: float, rescale: float = 0.0) -> Tensor:
    """Guided epsilon (B, ...) from conditional and unconditional predictions of the same shape."""
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"cfg_combine: rescale={rescale}; expected 0 <= rescale <= 1")
    g = eps_u + scale * (eps_c - eps_u)
    if rescale == 0.0:
        return g
    dims = tuple(range(1, g.dim()))
    ratio = eps_c.std(dim=dims, keepdim=True) / g.std(dim=dims, keepdim=True).clamp_min(1e-12)  # (B, 1..)
    return rescale * g * ratio + (1 - rescale) * g


def check_interval(interval: tuple[int, int] | None, T: int) -> None:
    """Raise unless ``interval`` is None or integers 0 <= lo <= hi <= T - 1."""
    if interval is not None and not (len(interval) == 2 and 0 <= interval[0] <= interval[1] <= T - 1):
        raise ValueError(f"guidance_interval={list(interval)}; expected [lo, hi] with 0 <= lo <= hi <= "
                         f"{T - 1} (the diffusion's timesteps - 1)")


def in_interval(t: int, interval: tuple[int, int] | None) -> bool:
    """True when guidance applies at integer timestep t (always, when ``interval`` is None)."""
    return interval is None or interval[0] <= t <= interval[1]


def ddim_loop(eps_fn: Callable[[Tensor, int], Tensor], alpha_bar: Tensor, x: Tensor, timesteps: Tensor,
              eta: float = 0.0, clip: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Run DDIM from x (B, ...) at ``timesteps[0]`` down to an x0 estimate (B, ...).

    ``eps_fn(x, t)`` predicts the noise at integer timestep t; ``alpha_bar`` (T,) is the cumulative
    product of (1 - beta). eta 0 is deterministic DDIM, eta 1 the DDPM-like stochastic sampler.
    """
    if eta < 0:
        raise ValueError(f"ddim: eta={eta}; expected eta >= 0")
    ts = timesteps.tolist()
    for i, t in enumerate(ts):
        ab = alpha_bar[t]
        ab_prev = alpha_bar[ts[i + 1]] if i + 1 < len(ts) else ab.new_tensor(1.0)
        eps = eps_fn(x, t)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp_min(0).sqrt() * eps
        if eta > 0:  # sigma is 0 at the last update (abar_prev = 1)
            x = x + sigma * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    return x
