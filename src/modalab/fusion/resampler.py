"""Perceiver Resampler (Flamingo; open_flamingo's ``PerceiverResampler``).

A fixed set of learned latents reads any number of media tokens: in each of ``depth`` layers the
latents cross-attend to ``concat(media, latents)`` (keys and values include the latents themselves)
and pass through a feed-forward block, both residual. The output has ``num_latents`` tokens whatever
the number of input tokens or frames, which is what keeps the language model's sequence short.

Several frames: an input (B, F, N, D) gets a learned time embedding per frame, then the frames are
flattened into one key sequence of F*N tokens. Padded media tokens are excluded via ``media_mask``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modalab.config import Section
from modalab.layers import multi_head_attention, register_block
from modalab.registry import register


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """Pre-norm FFN without biases (open_flamingo ``FeedForward``)."""
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


@register_block
class PerceiverLayer(nn.Module):
    """Latents attend to [media; latents], then a feed-forward block; both residual."""

    def __init__(self, dim: int, heads: int, head_dim: int, ff_mult: int) -> None:
        super().__init__()
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.attn = multi_head_attention(dim, heads, head_dim=head_dim, bias=False)
        self.ff = feed_forward(dim, ff_mult)

    def forward(self, media: Tensor, latents: Tensor, key_mask: Tensor | None) -> Tensor:
        """media (B, S, D), latents (B, L, D), key_mask (B, S + L) | None -> latents (B, L, D)."""
        lat = self.norm_latents(latents)
        kv = torch.cat([self.norm_media(media), lat], dim=1)  # (B, S + L, D)
        latents = latents + self.attn(lat, kv, key_mask=key_mask)
        return latents + self.ff(latents)


class PerceiverResampler(nn.Module):
    """Media tokens (B, N, D_in) or frames (B, F, N, D_in) -> (B, num_latents, D_out).

    Args:
        in_dim: width of the media tokens; projected to ``dim`` when different.
        dim: working width of latents and attention.
        depth, heads, head_dim: layers, heads and head width (open_flamingo: 6, 8, 64).
        num_latents: number of output tokens (open_flamingo: 64).
        out_dim: output width (e.g. the decoder's); a linear map is added when it differs from ``dim``.
        max_frames: when set, a learned time embedding per frame for (B, F, N, D) inputs.
        ff_mult: feed-forward expansion.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int = 6,
        heads: int = 8,
        head_dim: int = 64,
        num_latents: int = 64,
        out_dim: int | None = None,
        max_frames: int | None = None,
        ff_mult: int = 4,
    ) -> None:
        super().__init__()
        self.in_proj = nn.Linear(in_dim, dim) if in_dim != dim else nn.Identity()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.frame_embs = nn.Parameter(torch.randn(max_frames, dim) * 0.02) if max_frames else None
        self.layers = nn.ModuleList(PerceiverLayer(dim, heads, head_dim, ff_mult) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        out_dim = out_dim or dim
        self.out_proj = nn.Linear(dim, out_dim) if out_dim != dim else nn.Identity()
        self.num_latents = num_latents

    def forward(self, media: Tensor, media_mask: Tensor | None = None) -> tuple[Tensor, None]:
        """media (B, N, D_in) or (B, F, N, D_in); media_mask (B, N) or (B, F, N), True = real.

        Returns ((B, num_latents, D_out), None): every output token is real.
        """
        x = self.in_proj(media)
        if x.dim() == 4:
            b, f, n, d = x.shape
            if self.frame_embs is None:
                raise ValueError(
                    "fusion/resampler.py: got frames (B, F, N, D) but the resampler has no time "
                    "embeddings; build it with max_frames >= F"
                )
            if f > self.frame_embs.shape[0]:
                raise ValueError(
                    f"fusion/resampler.py: {f} frames exceed max_frames={self.frame_embs.shape[0]}"
                )
            x = (x + self.frame_embs[:f, None, :]).reshape(b, f * n, d)  # (B, F*N, D)
            if media_mask is not None:
                media_mask = media_mask.reshape(b, f * n)  # (B, F*N)
        elif x.dim() != 3:
            raise ValueError(
                f"fusion/resampler.py: media must be (B, N, D) or (B, F, N, D), got {tuple(media.shape)}"
            )
        b = x.shape[0]
        latents = self.latents.expand(b, -1, -1)  # (B, L, D)
        key_mask = None
        if media_mask is not None:
            ones = media_mask.new_ones(b, self.num_latents, dtype=torch.bool)
            key_mask = torch.cat([media_mask.bool(), ones], dim=1)  # (B, S + L)
        for layer in self.layers:
            latents = layer(x, latents, key_mask)
        return self.out_proj(self.norm(latents)), None


class ResamplerConfig(Section):
    dim: int = 256
    depth: int = 2
    heads: int = 4
    head_dim: int = 64
    num_latents: int = 16
    max_frames: int | None = None
    ff_mult: int = 4


@register("connector", "perceiver_resampler", schema=ResamplerConfig)
def build_resampler(in_dim: int, out_dim: int, **cfg: object) -> PerceiverResampler:
    """Perceiver Resampler: learned latents read the media; fixed number of output tokens."""
    return PerceiverResampler(in_dim=in_dim, out_dim=out_dim, **ResamplerConfig(**cfg).model_dump())
