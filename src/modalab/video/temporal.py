"""Temporal modelling over per-frame tokens: divided space-time attention (TimeSformer),
a factorised encoder (ViViT model 2), temporal pooling baselines, and VideoMAE tube masks.
Attention, feed-forward and the plain block come from ``layers/``.

Token layout: a video is (B, T, N, D): T frames, N spatial tokens per frame, width D.
"""

from __future__ import annotations

import torch
from torch import nn

from modalab.layers import Attention, Block, Mlp, MultiHeadAttention, register_block, rename_on_load


def proportional_attention(
    attn: Attention, x: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention with a per-key additive bias, and the keys token merging compares.

    x (B, L, D); bias (B, L) is added to every query's logits over keys (ToMe's proportional
    attention passes log(size)). Returns (out (B, L, D), keys (B, L, D/h) averaged over heads).
    """
    mask = None if bias is None else bias[:, None, None, :]  # (B, 1, 1, L)
    out, k = attn.attend(x, mask)  # (B, L, D), (B, h, L, dh)
    return out, k.mean(1)


def mlp(dim: int, ratio: float = 4.0) -> Mlp:
    """The feed-forward of the video blocks: ``Mlp(dim, int(dim * ratio))``."""
    return Mlp(dim, int(dim * ratio))


def transformer(dim: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> nn.Sequential:
    """``depth`` pre-norm blocks (``layers.Block``) followed by a final LayerNorm:
    (B, L, D) -> (B, L, D)."""
    return nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)], nn.LayerNorm(dim))


@register_block
class DividedSpaceTimeBlock(nn.Module):
    """TimeSformer divided attention: temporal attention (each spatial position over time), then
    spatial attention (each frame over its tokens), then MLP. (B, T, N, D) -> (B, T, N, D).

    The temporal output projection (``temporal_fc``) starts at zero, so at initialisation the block
    equals a spatial-only block: a pretrained image transformer is the starting point.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_t = nn.LayerNorm(dim)
        self.attn_t = Attention(dim, heads)
        self.temporal_fc = nn.Linear(dim, dim)
        nn.init.zeros_(self.temporal_fc.weight)
        nn.init.zeros_(self.temporal_fc.bias)
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, temporal: bool = True) -> torch.Tensor:
        b, t, n, d = x.shape
        if temporal:
            xt = x.permute(0, 2, 1, 3).reshape(b * n, t, d)  # (B*N, T, D)
            yt = self.temporal_fc(self.attn_t(self.norm_t(xt)))  # (B*N, T, D)
            x = x + yt.reshape(b, n, t, d).permute(0, 2, 1, 3)  # (B, T, N, D)
        xs = x.reshape(b * t, n, d)  # (B*T, N, D)
        xs = xs + self.attn(self.norm1(xs))
        xs = xs + self.mlp(self.norm2(xs))
        return xs.reshape(b, t, n, d)  # (B, T, N, D)


class DividedEncoder(nn.Module):
    """Divided space-time blocks, then mean over space and time: (B, T, N, D) -> (B, D)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [DividedSpaceTimeBlock(dim, heads, mlp_ratio) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x).mean(dim=(1, 2))


class FactorisedEncoder(nn.Module):
    """ViViT factorised encoder: ``spatial`` runs on each frame's tokens, a per-frame summary
    (CLS token) goes to ``temporal`` over the T frame tokens; the output is the temporal CLS.

    spatial, temporal: modules (B', L, D) -> (B', L, D), e.g. ``transformer(dim, depth, heads)``
    (ViViT-B: 12 spatial, 4 temporal layers). (B, T, N, D) -> (B, D).
    """

    def __init__(self, dim: int, spatial: nn.Module, temporal: nn.Module) -> None:
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        self.cls_s = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_t = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_s, std=0.02)
        nn.init.trunc_normal_(self.cls_t, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, d = x.shape
        xs = x.reshape(b * t, n, d)  # (B*T, N, D)
        xs = torch.cat([self.cls_s.expand(b * t, 1, d), xs], dim=1)  # (B*T, 1+N, D)
        frames = self.spatial(xs)[:, 0].reshape(b, t, d)  # (B, T, D)
        xt = torch.cat([self.cls_t.expand(b, 1, d), frames], dim=1)  # (B, 1+T, D)
        return self.temporal(xt)[:, 0]  # (B, D)


class MeanPool(nn.Module):
    """Temporal average: (B, T, D) -> (B, D); with mask (B, T) bool, only True steps count."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return x.mean(1)
        w = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
        return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class AttentionPool(nn.Module):
    """Learned-query attention over time: softmax_t(q . k_t / sqrt(D)) weighted sum of values.

    (B, T, D) -> (B, D); with mask (B, T) bool, False steps get no weight (a row with every step
    masked gives zeros). One head of ``layers.MultiHeadAttention`` whose query is the learned
    vector itself (no query or output projection); checkpoints with the former ``key`` /
    ``value`` names load.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))
        self.attn = MultiHeadAttention(1, nn.Identity(), nn.Linear(dim, dim), nn.Linear(dim, dim),
                                       nn.Identity())
        rename_on_load(self, {"key.": "attn.k_proj.", "value.": "attn.v_proj."})

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.query.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, D)
        return self.attn(q, x, key_mask=mask)[:, 0]  # (B, D)


def tube_mask(
    batch: int,
    frames: int,
    patches: int,
    ratio: float = 0.9,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """VideoMAE tube masking: one random 2D mask per video, repeated over all frames.

    Exactly int(ratio * patches) patches are masked in every frame. Returns (B, T, N) bool,
    True = masked (hidden from the encoder). ``frames`` counts temporal tokens (after tubelets).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"tube mask ratio must be in [0, 1), got {ratio}")
    num_masked = int(ratio * patches)
    order = torch.rand(batch, patches, generator=generator).argsort(dim=1)  # (B, N)
    mask2d = order < num_masked  # (B, N): a random set of num_masked positions
    return mask2d[:, None, :].expand(batch, frames, patches).clone()  # (B, T, N)
