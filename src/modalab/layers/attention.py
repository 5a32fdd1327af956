"""Attention on ``F.scaled_dot_product_attention``: the towers' fused-qkv self-attention
(:class:`Attention`, optional RoPE via ``rope(q, k)``) and multi-head attention with key masks and a
KV cache (:class:`MultiHeadAttention`).

The latter serves self-attention (``context=None``), cross-attention (``context`` = media tokens)
and incremental decoding (``cache``). The q/k/v/out projections are injected (torchtune style), so
LoRA or other wrappers can replace them; ``multi_head_attention`` builds the plain version.

Mask convention (the one SDPA uses): a boolean mask is ``True`` where attention is allowed.

- ``key_mask``  (B, S): ``True`` for a real key, ``False`` for padding.
- ``attn_mask`` (B, T, S) or (B, H, T, S): ``True`` where query t may look at key s.

A query row whose keys are all masked (a text token with no media before it, a padding query)
returns exactly zero instead of SDPA's NaN, so ``0 * out`` stays ``0`` in gated residuals.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RopeFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class KVCache:
    """Keys and values of earlier steps, per layer, shaped (B, H, S, Dh).

    ``static=False`` (self-attention): each call appends the new keys/values.
    ``static=True`` (cross-attention to media): the first call stores the projected media keys and
    values; later calls reuse them and ignore ``context``.
    """

    def __init__(self, static: bool = False) -> None:
        self.static = static
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k is None or self.v is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search)."""
        if self.k is not None and self.v is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


def causal_mask(t: int, s: int, offset: int, device: torch.device | None = None) -> Tensor:
    """(T, S) bool: query i (absolute position ``offset + i``) may see keys ``j <= offset + i``."""
    q = torch.arange(t, device=device)[:, None] + offset
    k = torch.arange(s, device=device)[None, :]
    return k <= q


class MultiHeadAttention(nn.Module):
    """Multi-head attention with injected projections.

    Args:
        num_heads: number of heads; ``q_proj`` output width must be divisible by it.
        q_proj: maps queries (.., Dq) -> (.., H*Dh).
        k_proj, v_proj: map keys/values (.., Dkv) -> (.., H*Dh).
        out_proj: maps (.., H*Dh) -> (.., D_out).
        dropout: attention-probability dropout during training.
    """

    def __init__(
        self,
        num_heads: int,
        q_proj: nn.Module,
        k_proj: nn.Module,
        v_proj: nn.Module,
        out_proj: nn.Module,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = q_proj, k_proj, v_proj, out_proj
        self.dropout = dropout

    def _heads(self, x: Tensor) -> Tensor:
        b, n, hd = x.shape
        if hd % self.num_heads:
            raise ValueError(
                f"layers/attention.py: projected width {hd} is not divisible by "
                f"num_heads={self.num_heads}"
            )
        return x.view(b, n, self.num_heads, hd // self.num_heads).transpose(1, 2)  # (B, H, N, Dh)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Attend from ``x`` (B, T, Dq) to ``context`` (B, S, Dkv), or to ``x`` itself.

        With a non-static ``cache``, ``key_mask`` and ``attn_mask`` cover all keys (past + new,
        length ``cache.length + T``) and ``is_causal`` means "causal at absolute positions".
        Returns (B, T, D_out).
        """
        b, t, _ = x.shape
        q = self._heads(self.q_proj(x))  # (B, H, T, Dh)
        if cache is not None and cache.static and cache.k is not None:
            k, v = cache.k, cache.v
        else:
            src = x if context is None else context
            k, v = self._heads(self.k_proj(src)), self._heads(self.v_proj(src))  # (B, H, S, Dh)
            if cache is not None:
                k, v = cache.update(k, v)
        assert k is not None and v is not None
        s = k.shape[2]
        offset = s - t if (cache is not None and not cache.static) else 0

        mask: Tensor | None = None
        if attn_mask is not None:
            mask = attn_mask if attn_mask.dim() == 4 else attn_mask[:, None]  # (B, 1|H, T, S)
        if key_mask is not None:
            if key_mask.shape != (b, s):
                raise ValueError(
                    f"layers/attention.py: key_mask has shape {tuple(key_mask.shape)}, "
                    f"expected (batch, keys) = ({b}, {s})"
                )
            km = key_mask[:, None, None, :].bool()  # (B, 1, 1, S)
            mask = km if mask is None else mask & km
        use_causal_flag = is_causal and mask is None and offset == 0
        if is_causal and not use_causal_flag:
            cm = causal_mask(t, s, offset, x.device)[None, None]  # (1, 1, T, S)
            mask = cm if mask is None else mask & cm

        row_ok: Tensor | None = None
        if mask is not None:
            row_ok = mask.any(dim=-1, keepdim=True)  # (B, 1|H, T, 1)
            mask = mask | ~row_ok  # let empty rows see everything, zero them below
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=use_causal_flag,
        )  # (B, H, T, Dh)
        if row_ok is not None:
            out = out * row_ok.to(out.dtype)
        out = out.transpose(1, 2).reshape(b, t, -1)  # (B, T, H*Dh)
        return self.out_proj(out)


def multi_head_attention(
    dim: int,
    num_heads: int,
    kv_dim: int | None = None,
    head_dim: int | None = None,
    out_dim: int | None = None,
    bias: bool = False,
    dropout: float = 0.0,
) -> MultiHeadAttention:
    """Plain ``nn.Linear`` projections: queries of width ``dim``, keys/values of ``kv_dim``."""
    head_dim = head_dim or dim // num_heads
    inner = num_heads * head_dim
    kv_dim = kv_dim or dim
    return MultiHeadAttention(
        num_heads,
        nn.Linear(dim, inner, bias=bias),
        nn.Linear(kv_dim, inner, bias=bias),
        nn.Linear(kv_dim, inner, bias=bias),
        nn.Linear(inner, out_dim or dim, bias=bias),
        dropout=dropout,
    )


def naive_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """Reference softmax(QK^T / sqrt(d)) V on (B, H, T, Dh) x (B, H, S, Dh); rows with no allowed
    key give zero. Materialises the (B, H, T, S) score matrix."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
        row_ok = mask.any(dim=-1, keepdim=True)
        scores = scores.masked_fill(~row_ok, 0.0)
        return torch.softmax(scores, dim=-1) @ v * row_ok.to(v.dtype)
    return torch.softmax(scores, dim=-1) @ v


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    Args:
        dim: model width D; heads: number of heads (D must be divisible by heads).
        qkv_bias: bias on the qkv projection; dropout: attention-probability dropout;
        out_dropout: dropout on the output projection (residual dropout).
    Shapes: x (B, N, D) -> (B, N, D).

    ``attn_mask`` is SDPA's: boolean (True = may attend) or float, added to the logits (an
    additive bias, e.g. ToMe's log token sizes), broadcastable to (B, H, N, N). ``rope(q, k)``
    rotates queries and keys (B, H, N, Dh) before the product.

    With a ``cache`` (:class:`KVCache`, incremental decoding) the new keys and values are appended
    to the cached ones; ``attn_mask`` then covers every key (past + new, S = ``cache.length``
    after the update) and ``is_causal`` means causal at absolute positions.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, dropout: float = 0.0,
                 out_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"layers/attention.py: width {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dropout, self.out_dropout = dropout, out_dropout

    def attend(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        rope: RopeFn | None = None,
        cache: KVCache | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Like ``forward`` but also returns the keys (B, H, N, Dh) (token merging uses them)."""
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads)  # (B, N, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, Dh)
        if rope is not None:
            q, k = rope(q, k)
        keys, values = (k, v) if cache is None else cache.update(k, v)  # (B, H, S, Dh)
        offset = keys.shape[2] - n  # absolute position of the first query
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)
        causal = is_causal and n > 1  # one query at the last position sees every key
        if causal and (attn_mask is not None or offset):  # SDPA's flag assumes offset 0
            cm = causal_mask(n, keys.shape[2], offset, x.device)  # (N, S)
            attn_mask = cm if attn_mask is None else (
                attn_mask & cm if attn_mask.dtype == torch.bool
                else attn_mask.masked_fill(~cm, float("-inf")))
            causal = False
        out = F.scaled_dot_product_attention(
            q,
            keys,
            values,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal,
        )  # (B, H, N, Dh)
        out = self.proj(out.transpose(1, 2).reshape(b, n, d))  # (B, N, D)
        if self.out_dropout:
            out = F.dropout(out, self.out_dropout, self.training)
        return out, k

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        rope: RopeFn | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        return self.attend(x, attn_mask, is_causal, rope, cache)[0]
