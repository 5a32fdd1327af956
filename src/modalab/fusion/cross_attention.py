"""Gated cross-attention (Flamingo ``GatedCrossAttentionBlock``), inserted before decoder blocks.

    x = x + tanh(g_attn) * attn(norm(x), media)
    x = x + tanh(g_ff)   * ff(x)

Both gates start at 0, so a decoder with these blocks inserted computes exactly what it did before.
Media arrive as (B, M, N, D_m): M images (or clips) per sequence, N tokens each (e.g. resampler
latents). A text token sees only the most recent media at or before it (``only_immediate=True``,
Flamingo's default) or every earlier one; tokens before the first media see nothing and their
attention output is exactly zero.

Which media precedes a token is given per token by ``media_index`` (B, T): the index (0..M-1) of
the most recent media, -1 for none; ``media_index_from_locations`` computes it from a (B, T) bool
marking the positions of the media placeholder tokens in the text.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modalab.layers import KVCache, multi_head_attention, register_block
from modalab.fusion.resampler import feed_forward


def media_index_from_locations(media_locations: Tensor) -> Tensor:
    """(B, T) bool, True at media placeholder tokens -> (B, T) long index of the latest media
    at or before each token, -1 before the first."""
    return media_locations.long().cumsum(dim=1) - 1


def media_attention_mask(
    media_index: Tensor, num_media: int, tokens_per_media: int, only_immediate: bool = True
) -> Tensor:
    """(B, T) media index -> (B, T, M*N) bool: may text token t look at media key s?"""
    key_media = torch.arange(num_media, device=media_index.device).repeat_interleave(tokens_per_media)
    idx = media_index[:, :, None]  # (B, T, 1)
    allowed = key_media[None, None, :] == idx if only_immediate else key_media[None, None, :] <= idx
    return allowed & (idx >= 0)


@register_block
class GatedCrossAttentionBlock(nn.Module):
    """Text (B, T, D) attends to media (B, M, N, D_m); tanh gates at 0 make it an identity at init.

    Args:
        dim: text width.
        media_dim: media token width.
        heads, head_dim: attention heads and head width.
        ff_mult: feed-forward expansion.
        only_immediate: attend only to the latest preceding media (True) or to all earlier ones.
    """

    def __init__(
        self,
        dim: int,
        media_dim: int,
        heads: int = 8,
        head_dim: int = 64,
        ff_mult: int = 4,
        only_immediate: bool = True,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = multi_head_attention(dim, heads, kv_dim=media_dim, head_dim=head_dim, bias=False)
        self.attn_gate = nn.Parameter(torch.zeros(()))
        self.ff = feed_forward(dim, ff_mult)
        self.ff_gate = nn.Parameter(torch.zeros(()))
        self.only_immediate = only_immediate

    def forward(
        self,
        x: Tensor,
        media: Tensor,
        media_mask: Tensor | None = None,
        media_index: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """x (B, T, D); media (B, M, N, D_m) or (B, N, D_m) (one media); media_mask (B, M, N) or
        (B, N), True = real; media_index (B, T), None = every token sees media 0 (or all media when
        ``only_immediate=False``); cache: a static ``KVCache`` reusing the projected media.
        Returns (B, T, D)."""
        if media.dim() == 3:
            media = media[:, None]  # (B, 1, N, D_m)
            if media_mask is not None and media_mask.dim() == 2:
                media_mask = media_mask[:, None]  # (B, 1, N)
        if media.dim() != 4:
            raise ValueError(
                f"fusion/cross_attention.py: media must be (B, M, N, D) or (B, N, D), "
                f"got {tuple(media.shape)}"
            )
        b, m, n, d = media.shape
        t = x.shape[1]
        if media_index is None:
            fill = 0 if self.only_immediate else m - 1
            media_index = torch.full((b, t), fill, dtype=torch.long, device=x.device)
        if media_index.shape != (b, t):
            raise ValueError(
                f"fusion/cross_attention.py: media_index has shape {tuple(media_index.shape)}, "
                f"expected (batch, text length) = ({b}, {t})"
            )
        if int(media_index.max()) >= m:
            raise ValueError(
                f"fusion/cross_attention.py: media_index refers to media {int(media_index.max())} "
                f"but only {m} media were given"
            )
        attn_mask = media_attention_mask(media_index, m, n, self.only_immediate)  # (B, T, M*N)
        key_mask = None if media_mask is None else media_mask.reshape(b, m * n).bool()
        flat = media.reshape(b, m * n, d)  # (B, M*N, D_m)
        attn = self.attn(self.norm(x), flat, key_mask=key_mask, attn_mask=attn_mask, cache=cache)
        x = x + torch.tanh(self.attn_gate) * attn
        return x + torch.tanh(self.ff_gate) * self.ff(x)
