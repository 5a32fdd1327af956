"""The pre-norm transformer block and a stack of them (gradient checkpointing optional).

``attn_mask`` follows SDPA's convention (``layers/attention.py``); ``rope`` is an optional callable
applied to q and k (shape (B, heads, N, head_dim)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.layers.attention import Attention, RopeFn
from modalab.layers.mlp import Activation, Mlp


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    ``act``, ``norm_eps`` and ``mlp_hidden`` (overrides ``dim * mlp_ratio``) let pretrained
    layouts (CLIP's quick GELU, SigLIP's tanh GELU and 1e-6 norms, ViT's 1e-12) load exactly.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        act: Activation = F.gelu,
        norm_eps: float = 1e-5,
        mlp_hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden or int(dim * mlp_ratio), act)

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

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        act: Activation = F.gelu,
        norm_eps: float = 1e-5,
        mlp_hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, act=act, norm_eps=norm_eps, mlp_hidden=mlp_hidden)
            for _ in range(depth)
        )
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
