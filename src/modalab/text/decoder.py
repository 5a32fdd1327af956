"""A small causal language model with hooks for visual conditioning.

Token embedding + learned positions -> pre-norm blocks (SDPA, causal) -> final norm -> tied output
head. Three ways to condition or adapt it, each injected rather than switched on by a flag:

- visual prefix: ``prefix`` embeddings (B, P, D) are prepended to the token embeddings (LLaVA /
  prefix-LM style); logits are returned for the text positions only.
- bottleneck adapters after the feed-forward: ``insert_adapters(lambda i: BottleneckAdapter(...))``.
- cross-attention layers before blocks: ``insert_cross_layers(lambda i: module_or_None)``; each is
  called as ``cross(x, cache=..., **cross_inputs)`` (e.g. ``fusion.cross_attention``'s gated block).
- LoRA on the attention projections (named ``q_proj k_proj v_proj out_proj``): use
  ``fusion.lora.apply_lora(decoder, targets, rank, alpha)``.

Padding: ``attention_mask`` (B, T) is True for real tokens. Positions count real tokens only, so
left-padded prompts get the same positions as unpadded ones. ``DecoderCache`` holds per-layer keys
and values plus the mask and next position for incremental decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.layers import Block, KVCache, Mlp, multi_head_attention, rename_on_load


class BottleneckAdapter(nn.Module):
    """``x + up(gelu(down(x)))`` with ``up`` zero-initialised (Houlsby adapter, identity at init)."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(F.gelu(self.down(x)))


class DecoderBlock(Block):
    """[cross] -> x + attn(norm(x)) -> x + mlp(norm(x)) -> [adapter].

    ``layers.Block`` with the causal, key-masked, cached ``MultiHeadAttention`` (projections named
    ``q_proj k_proj v_proj out_proj`` for LoRA) and an ``Mlp`` with dropout after its output; the
    injected ``cross`` layer and ``adapter`` run before and after it. Checkpoints that name the
    feed-forward ``ff.0`` / ``ff.2`` (before the move onto ``layers.Block``) still load.
    """

    LEGACY_KEYS = {"ff.": "mlp."}

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__(
            dim, heads,
            attn=multi_head_attention(dim, heads, bias=True, dropout=dropout),
            mlp=Mlp(dim, dim * mlp_ratio, dropout=dropout),
        )
        self.cross: nn.Module | None = None
        self.adapter: nn.Module | None = None
        rename_on_load(self, self.LEGACY_KEYS)

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        key_mask: Tensor | None,
        cache: KVCache | None,
        cross_inputs: Mapping[str, Any] | None,
        cross_cache: KVCache | None,
    ) -> Tensor:
        if self.cross is not None:
            if cross_inputs is None:
                raise ValueError(
                    "text/decoder.py: the decoder has cross-attention layers; pass cross_inputs "
                    "(e.g. media=..., media_mask=..., media_index=...)"
                )
            x = self.cross(x, cache=cross_cache, **cross_inputs)
        x = super().forward(x, key_mask=key_mask, is_causal=True, cache=cache)
        if self.adapter is not None:
            x = self.adapter(x)
        return x


class DecoderCache:
    """Per-layer self-attention caches, static cross-attention caches, mask and next positions."""

    def __init__(self, depth: int) -> None:
        self.layers = [KVCache() for _ in range(depth)]
        self.cross = [KVCache(static=True) for _ in range(depth)]
        self.key_mask: Tensor | None = None  # (B, S_past) True = real
        self.next_pos: Tensor | None = None  # (B,) position of the next real token

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search); static media caches too."""
        for c in self.layers + self.cross:
            c.reorder(index)
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, index)
        if self.next_pos is not None:
            self.next_pos = self.next_pos.index_select(0, index)


class TextDecoder(nn.Module):
    """Causal LM: tokens (B, T) [+ prefix (B, P, D)] -> logits (B, T, V) for the token positions.

    Args:
        vocab_size, dim, depth, heads: sizes.
        max_len: longest prefix + text sequence (learned positions).
        mlp_ratio: feed-forward expansion.
        dropout: residual and attention dropout.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        max_len: int = 128,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.dim, self.max_len, self.vocab_size = dim, max_len, vocab_size
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.01)

    # ------------------------------------------------------------------ hooks

    def insert_adapters(self, make: Callable[[int], nn.Module | None]) -> None:
        """Set ``block.adapter = make(i)`` for each block ``i`` (None leaves a block bare)."""
        for i, block in enumerate(self.blocks):
            block.adapter = make(i)

    def insert_cross_layers(self, make: Callable[[int], nn.Module | None]) -> None:
        """Set ``block.cross = make(i)``: a layer run before block ``i`` (e.g. every 2nd block)."""
        for i, block in enumerate(self.blocks):
            block.cross = make(i)

    def new_cache(self) -> DecoderCache:
        return DecoderCache(len(self.blocks))

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        tokens: Tensor,
        prefix: Tensor | None = None,
        prefix_mask: Tensor | None = None,
        attention_mask: Tensor | None = None,
        cross_inputs: Mapping[str, Any] | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """tokens (B, T) long; prefix (B, P, D); prefix_mask (B, P) and attention_mask (B, T) bool,
        True = real. With ``cache``, pass only the new tokens (the prefix only on the first call).
        Returns logits (B, T, V)."""
        b, t = tokens.shape
        x = self.tok_emb(tokens)  # (B, T, D)
        p = 0
        if prefix is not None:
            if prefix.shape[0] != b or prefix.shape[-1] != self.dim:
                raise ValueError(
                    f"text/decoder.py: prefix has shape {tuple(prefix.shape)}, expected "
                    f"({b}, P, {self.dim})"
                )
            p = prefix.shape[1]
            x = torch.cat([prefix.to(x.dtype), x], dim=1)  # (B, P + T, D)
        new_mask = None
        if prefix_mask is not None or attention_mask is not None:
            pm = prefix_mask if prefix_mask is not None else tokens.new_ones(b, p, dtype=torch.bool)
            am = attention_mask if attention_mask is not None else tokens.new_ones(b, t, dtype=torch.bool)
            new_mask = torch.cat([pm.bool(), am.bool()], dim=1) if p else am.bool()  # (B, P + T)
        real = new_mask if new_mask is not None else x.new_ones(b, p + t, dtype=torch.bool)

        start = tokens.new_zeros(b)
        if cache is not None and cache.next_pos is not None:
            start = cache.next_pos
        pos = start[:, None] + real.long().cumsum(dim=1) - 1  # (B, P + T)
        pos = pos.clamp(min=0)
        if int(pos.max()) >= self.max_len:
            raise ValueError(
                f"text/decoder.py: sequence needs position {int(pos.max())} but max_len={self.max_len}; "
                "build the decoder with a larger max_len or shorten prefix + text"
            )
        x = x + self.pos_emb(pos)

        key_mask = new_mask
        if cache is not None:
            past = cache.key_mask
            if past is not None or new_mask is not None:
                past = past if past is not None else x.new_ones(b, cache.length, dtype=torch.bool)
                key_mask = torch.cat([past, real], dim=1)  # (B, S_past + P + T)
                cache.key_mask = key_mask
            cache.next_pos = start + real.long().sum(dim=1)
        for i, block in enumerate(self.blocks):
            x = block(
                x,
                key_mask,
                None if cache is None else cache.layers[i],
                cross_inputs,
                None if cache is None else cache.cross[i],
            )
        h = self.norm(x[:, p:])  # (B, T, D)
        return h @ self.tok_emb.weight.t()  # (B, T, V), tied head
