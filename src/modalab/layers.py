"""Modality-agnostic transformer building blocks shared by the text, vision, audio and video towers.

Attention runs on ``F.scaled_dot_product_attention``. ``attn_mask`` follows SDPA's convention:
a bool tensor where True means "may attend", broadcastable to (B, heads, N, N), or a float
additive mask. ``rope`` is an optional callable applied to q and k (shape (B, heads, N, head_dim)).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RopeFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class Attention(nn.Module):
    """Multi-head self-attention.

    Args:
        dim: model width D; heads: number of heads (D must be divisible by heads).
    Shapes: x (B, N, D) -> (B, N, D).
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        rope: RopeFn | None = None,
    ) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads)  # (B, N, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, Dh)
        if rope is not None:
            q, k = rope(q, k)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and attn_mask is None,
        )  # (B, H, N, Dh)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))  # (B, N, D)


class Mlp(nn.Module):
    """Linear -> GELU -> Linear. Shapes: (..., D) -> (..., D)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


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
