"""The pre-norm transformer block, a stack of them, and the set of block types FSDP shards.

``Block`` is the one block implementation: ``x + attn(norm1(x), **attn_kwargs)`` then
``x + mlp(norm2(x))``. Its parts are injected (``attn``, ``mlp``, ``norm_layer``), so the towers'
fused-qkv :class:`~modalab.layers.attention.Attention` (masks, RoPE, additive bias) and the
key-masked, cached :class:`~modalab.layers.attention.MultiHeadAttention` run in the same block;
the keyword arguments of ``forward`` after ``x`` go to the attention unchanged.

``attn_mask`` follows SDPA's convention (``layers/attention.py``); ``rope`` is an optional callable
applied to q and k (shape (B, heads, N, head_dim)).

``register_block`` marks a class as a transformer block (``Block`` and its subclasses are blocks
already); ``block_types()`` is what ``train/dist.shard_model`` wraps with FSDP one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.layers.attention import Attention, RopeFn
from modalab.layers.mlp import Activation, Mlp

_BLOCK_TYPES: list[type[nn.Module]] = []
T = TypeVar("T", bound=type)


def register_block(cls: T) -> T:
    """Class decorator: FSDP shards every module of this class as its own unit."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"layers/block.py: register_block needs an nn.Module subclass, got {cls!r}")
    if cls not in _BLOCK_TYPES:
        _BLOCK_TYPES.append(cls)
    return cls


def block_types() -> tuple[type[nn.Module], ...]:
    """Every registered block class (of the modules imported so far; a model's own are)."""
    return tuple(_BLOCK_TYPES)


@register_block
class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    Args:
        dim, heads, mlp_ratio, dropout: sizes of the default parts (fused-qkv ``Attention`` with
            attention dropout ``dropout``, ``Mlp`` of width ``dim * mlp_ratio``).
        act, norm_eps, mlp_hidden: activation of the default ``Mlp``, eps of the default
            LayerNorms, ``Mlp`` width overriding ``dim * mlp_ratio`` (pretrained layouts: CLIP's
            quick GELU, SigLIP's tanh GELU and 1e-6 norms, ViT's 1e-12).
        attn: the attention module, called as ``attn(h, **attn_kwargs)`` (replaces the default).
        mlp: the feed-forward (replaces the default).
        norm_layer: builds each of the two norms from ``dim`` (replaces ``LayerNorm(dim, norm_eps)``).
    Shapes: x (B, N, D) -> (B, N, D).
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
        *,
        attn: nn.Module | None = None,
        mlp: nn.Module | None = None,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        norm = norm_layer or (lambda d: nn.LayerNorm(d, eps=norm_eps))
        self.norm1 = norm(dim)
        self.attn = attn if attn is not None else Attention(dim, heads, dropout=dropout)
        self.norm2 = norm(dim)
        self.mlp = mlp if mlp is not None else Mlp(dim, mlp_hidden or int(dim * mlp_ratio), act)

    def forward(self, x: Tensor, **attn_kwargs: Any) -> Tensor:
        """x (B, N, D); ``attn_kwargs`` (``attn_mask``, ``is_causal``, ``rope`` for ``Attention``;
        ``key_mask``, ``cache`` ... for ``MultiHeadAttention``) go to the attention."""
        x = x + self.attn(self.norm1(x), **attn_kwargs)
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
        kw = {"attn_mask": attn_mask, "is_causal": is_causal, "rope": rope}
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False, **kw)
            else:
                x = blk(x, **kw)
        return x
