"""Q-Former (BLIP-2): learned queries that self-attend and, every other layer, read the encoder.

Each layer: self-attention among the queries, then (in layers ``i % cross_every == 0``)
cross-attention from the queries to the frozen encoder's tokens, then a feed-forward block; all
pre-norm residual. The output has ``num_queries`` tokens (BLIP-2: 32) whatever the input length.

Not here: BLIP-2's text branch sharing the self-attention (for ITM/ITG in stage 1); the queries
alone are the connector used in stage 2.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modalab.config import Section
from modalab.layers.attention import multi_head_attention
from modalab.registry import register


class QFormerLayer(nn.Module):
    """Self-attention over queries, optional cross-attention to the encoder, feed-forward."""

    def __init__(self, dim: int, heads: int, enc_dim: int, cross: bool, ff_mult: int) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = multi_head_attention(dim, heads, bias=True)
        self.norm_cross = nn.LayerNorm(dim) if cross else None
        self.cross_attn = multi_head_attention(dim, heads, kv_dim=enc_dim, bias=True) if cross else None
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim * ff_mult), nn.GELU(), nn.Linear(dim * ff_mult, dim))

    def forward(self, q: Tensor, enc: Tensor, enc_mask: Tensor | None) -> Tensor:
        """q (B, Q, D), enc (B, N, D_enc), enc_mask (B, N) | None -> (B, Q, D)."""
        q = q + self.self_attn(self.norm_self(q))
        if self.cross_attn is not None and self.norm_cross is not None:
            q = q + self.cross_attn(self.norm_cross(q), enc, key_mask=enc_mask)
        return q + self.ff(self.norm_ff(q))


class QFormer(nn.Module):
    """Encoder tokens (B, N, D_in) -> (B, num_queries, D_out).

    Args:
        in_dim: encoder width (keys/values of the cross-attention).
        dim: query width.
        depth: layers; cross-attention in layers 0, cross_every, 2*cross_every, ...
        heads: attention heads.
        num_queries: learned queries (BLIP-2: 32).
        out_dim: output width; a linear map is added when it differs from ``dim``.
        cross_every: BLIP-2 uses 2.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int = 4,
        heads: int = 4,
        num_queries: int = 32,
        out_dim: int | None = None,
        cross_every: int = 2,
        ff_mult: int = 4,
    ) -> None:
        super().__init__()
        if cross_every < 1:
            raise ValueError(f"fusion/qformer.py: cross_every must be >= 1, got {cross_every}")
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.layers = nn.ModuleList(
            QFormerLayer(dim, heads, in_dim, cross=(i % cross_every == 0), ff_mult=ff_mult)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        out_dim = out_dim or dim
        self.out_proj = nn.Linear(dim, out_dim) if out_dim != dim else nn.Identity()

    def forward(self, media: Tensor, media_mask: Tensor | None = None) -> tuple[Tensor, None]:
        """media (B, N, D_in), media_mask (B, N) True = real -> ((B, Q, D_out), None)."""
        if media.dim() != 3:
            raise ValueError(f"fusion/qformer.py: media must be (B, N, D), got {tuple(media.shape)}")
        q = self.queries.expand(media.shape[0], -1, -1)  # (B, Q, D)
        mask = None if media_mask is None else media_mask.bool()
        for layer in self.layers:
            q = layer(q, media, mask)
        return self.out_proj(self.norm(q)), None


class QFormerConfig(Section):
    dim: int = 256
    depth: int = 4
    heads: int = 4
    num_queries: int = 32
    cross_every: int = 2
    ff_mult: int = 4


@register("connector", "qformer", schema=QFormerConfig)
def build_qformer(in_dim: int, out_dim: int, **cfg: object) -> QFormer:
    """Q-Former: learned queries, cross-attention to the encoder every other layer."""
    return QFormer(in_dim=in_dim, out_dim=out_dim, **QFormerConfig(**cfg).model_dump())
