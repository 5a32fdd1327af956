"""The pre-norm transformer block and a stack of them (gradient checkpointing optional).

``attn_mask`` follows SDPA's convention (``layers/attention.py``); ``rope`` is an optional callable
applied to q and k (shape (B, heads, N, head_dim)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modalab.layers.attention import Attention, RopeFn
from modalab.layers.mlp import Mlp


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        rope: RopeFn | None = None,
    ) -> Tensor:
        x = x + self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal, rope=rope)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of :class:`Block` with optional gradient checkpointing.

    Shapes: x (B, N, D) -> (B, N, D).
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.grad_checkpointing = False

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        rope: RopeFn | None = None,
    ) -> Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(
                    blk, x, attn_mask, is_causal, rope, use_reentrant=False
                )
            else:
                x = blk(x, attn_mask=attn_mask, is_causal=is_causal, rope=rope)
        return x
