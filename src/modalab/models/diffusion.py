"""The diffusion side of the unified model (chapter 5.2.2): a small conditional U-Net denoiser that
cross-attends to text hidden states, and DDPM training with DDIM sampling and classifier-free
guidance (the loop itself is ``models/ddim.py``). ``models/unified`` re-exports both names.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.layers import torch_mha_attention
from modalab.models.ddim import cfg_combine, check_interval, ddim_loop, ddim_timesteps, in_interval


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class _Res(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb: int) -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(8, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, c_out)
        self.n2, self.c2 = nn.GroupNorm(8, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.c1(F.silu(self.n1(x))) + self.emb(e)[:, :, None, None]
        return self.skip(x) + self.c2(F.silu(self.n2(h)))


class Denoiser(nn.Module):
    """Small conditional U-Net: x_t (B, C, H, W), t (B,), cond (B, T, Dc) -> epsilon (B, C, H, W).

    Time and mean-pooled condition are added in every residual block; at the half resolution the
    features cross-attend to the condition tokens. ``null_cond`` is the learned "no text"
    condition used for classifier-free guidance. H and W must be even.
    """

    def __init__(self, in_channels: int, cond_dim: int, channels: int = 32, heads: int = 4) -> None:
        super().__init__()
        if channels % 8:
            raise ValueError(f"Denoiser: channels={channels}; expected a multiple of 8 (GroupNorm)")
        c, e = channels, channels * 4
        self.t_mlp = nn.Sequential(nn.Linear(c, e), nn.SiLU(), nn.Linear(e, e))
        self.c_proj = nn.Linear(cond_dim, e)
        self.null_cond = nn.Parameter(torch.zeros(1, 1, cond_dim))
        self.inp = nn.Conv2d(in_channels, c, 3, padding=1)
        self.down1, self.down = _Res(c, c, e), nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)
        self.mid1, self.mid2 = _Res(2 * c, 2 * c, e), _Res(2 * c, 2 * c, e)
        self.attn_norm = nn.LayerNorm(2 * c)
        # initialised and loadable as nn.MultiheadAttention(2c, heads, kdim=vdim=cond_dim) was
        self.attn = torch_mha_attention(2 * c, heads, kv_dim=cond_dim)
        self.up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2 * c, c, 3, padding=1))
        self.up1 = _Res(2 * c, c, e)
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(),
                                 nn.Conv2d(c, in_channels, 3, padding=1))
        self.channels = c

    def forward(self, x: Tensor, t: Tensor, cond: Tensor, cond_pad: Tensor | None = None) -> Tensor:
        if cond_pad is None:
            keep = torch.ones_like(cond[..., :1])
        else:
            keep = (~cond_pad).to(cond.dtype)[..., None]  # (B, T, 1)
        pooled = (cond * keep).sum(1) / keep.sum(1).clamp_min(1)  # (B, Dc)
        temb = timestep_embedding(t, self.channels).to(x.dtype)  # (B, c); float64 runs too
        e = self.t_mlp(temb) + self.c_proj(pooled)
        h0 = self.down1(self.inp(x), e)  # (B, c, H, W)
        h = self.mid1(self.down(h0), e)  # (B, 2c, H/2, W/2)
        b, ch, hh, ww = h.shape
        seq = h.flatten(2).transpose(1, 2)  # (B, H/2 * W/2, 2c)
        real = None if cond_pad is None else ~cond_pad  # (B, T) True = a real condition token
        att = self.attn(self.attn_norm(seq), cond, key_mask=real)  # (B, H/2 * W/2, 2c)
        h = (seq + att).transpose(1, 2).reshape(b, ch, hh, ww)  # (B, 2c, H/2, W/2)
        h = self.up(self.mid2(h, e))  # (B, c, H, W)
        return self.out(self.up1(torch.cat([h, h0], 1), e))


class GaussianDiffusion(nn.Module):
    """DDPM training (epsilon prediction, linear betas) and DDIM sampling with CFG.

    ``denoiser(x_t, t, cond, cond_pad) -> eps``; images are expected in [-1, 1].
    """

    def __init__(self, denoiser: nn.Module, timesteps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> None:
        super().__init__()
        self.denoiser, self.T = denoiser, timesteps
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.register_buffer("alpha_bar", torch.cumprod(1 - betas, 0).float(), persistent=False)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; x0 (B, ...), t (B,)."""
        ab = self.alpha_bar[t].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def _drop(self, cond: Tensor, cond_pad: Tensor | None, drop: Tensor) -> tuple[Tensor, Tensor]:
        """Replace rows where ``drop`` (B,) is True by the null condition (one valid token)."""
        null = self.denoiser.null_cond.expand(cond.shape[0], cond.shape[1], -1)
        pad = cond_pad if cond_pad is not None else torch.zeros(cond.shape[:2], dtype=torch.bool,
                                                                 device=cond.device)
        null_pad = torch.ones_like(pad)
        null_pad[:, 0] = False
        return (torch.where(drop[:, None, None], null, cond),
                torch.where(drop[:, None], null_pad, pad))

    def loss(self, x0: Tensor, cond: Tensor, cond_pad: Tensor | None = None,
             p_uncond: float = 0.1, generator: torch.Generator | None = None) -> Tensor:
        """Epsilon-prediction MSE on x0 (B, C, H, W); condition dropped with prob ``p_uncond``."""
        b = x0.shape[0]
        t = torch.randint(0, self.T, (b,), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        drop = torch.rand(b, device=x0.device, generator=generator) < p_uncond
        cond, cond_pad = self._drop(cond, cond_pad, drop)
        return F.mse_loss(self.denoiser(self.q_sample(x0, t, noise), t, cond, cond_pad), noise)

    def guided_eps(self, x: Tensor, t: Tensor, cond: Tensor, cond_pad: Tensor | None,
                   guidance: float, rescale: float = 0.0) -> Tensor:
        """eps_u + guidance * (eps_c - eps_u) (``models/ddim.cfg_combine``); guidance 1 is plain
        conditional."""
        eps_c = self.denoiser(x, t, cond, cond_pad)
        if guidance == 1.0:
            return eps_c
        ucond, upad = self._drop(cond, cond_pad, torch.ones(x.shape[0], dtype=torch.bool,
                                                            device=x.device))
        return cfg_combine(eps_c, self.denoiser(x, t, ucond, upad), guidance, rescale)

    @torch.no_grad()
    def ddim_sample(self, shape: tuple[int, ...], cond: Tensor, cond_pad: Tensor | None = None,
                    steps: int = 50, guidance: float = 3.0, eta: float = 0.0, clip: bool = True,
                    generator: torch.Generator | None = None, guidance_interval: tuple[int, int] | None = None,
                    guidance_rescale: float = 0.0) -> Tensor:
        """DDIM (Song et al. 2021) from pure noise to x0 of ``shape`` in ``steps`` steps
        (``models/ddim.py``); guidance only at timesteps in ``guidance_interval`` [lo, hi] if given."""
        check_interval(guidance_interval, self.T)
        x = torch.randn(shape, device=cond.device, generator=generator)

        def eps_fn(x: Tensor, t: int) -> Tensor:
            g = guidance if in_interval(t, guidance_interval) else 1.0
            tt = torch.full((shape[0],), t, dtype=torch.long, device=x.device)  # (B,)
            return self.guided_eps(x, tt, cond, cond_pad, g, guidance_rescale)

        return ddim_loop(eps_fn, self.alpha_bar, x, ddim_timesteps(self.T, steps), eta, clip, generator)
