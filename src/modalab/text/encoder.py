"""A small text transformer encoder.

Token + learned position embeddings, pre-norm blocks on SDPA with a key-padding mask (id 0 is
padding), a final norm and a pool: ``mean`` over real tokens or ``eos`` (the last real token,
with causal attention as in CLIP).

Shapes: tokens (B, L) int64 -> (B, width).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from modalab.layers import Transformer


def trim_padding(tokens: Tensor) -> Tensor:
    """(B, L) -> (B, L') with L' = 1 + the last column holding a real token (at least 1).

    Dropped columns are padding (id 0) in every row, so a key-masked encoder pooled over real
    tokens gives the same features (up to float rounding) at L'/L of the cost.
    """
    used = (tokens != 0).any(dim=0).nonzero()  # (K, 1) columns with a real token
    n = int(used.max()) + 1 if used.numel() else 1
    return tokens if n == tokens.shape[1] else tokens[:, :n]


class TextTransformer(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        context_length: int = 16,
        width: int = 128,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        pool: Literal["mean", "eos"] = "mean",
        trim_padding: bool = False,
    ) -> None:
        super().__init__()
        self.trim_padding = trim_padding
        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.randn(1, context_length, width) * 0.01)
        self.transformer = Transformer(width, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(width)
        self.pool = pool
        self.width = width
        self.context_length = context_length
        nn.init.normal_(self.token_embed.weight, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, L) int64 (0 = padding) -> (B, width).

        With ``trim_padding``, trailing columns that are padding in every row are dropped first
        (:func:`trim_padding`): masked keys and unpooled queries do not change the pooled features,
        only the cost (a tokenizer pads every caption to ``context_length``). Off by default: the
        result is equal up to float rounding, not bit for bit, so seeded runs would move.
        """
        if self.trim_padding:
            tokens = trim_padding(tokens)
        return self.pool_tokens(self.forward_tokens(tokens), tokens != 0)

    def forward_tokens(self, tokens: Tensor) -> Tensor:
        """(B, L) int64 (0 = padding) -> (B, L, width) contextual token features."""
        b, n = tokens.shape
        if n > self.context_length:
            raise ValueError(f"token length {n} exceeds context_length {self.context_length}")
        valid = tokens != 0  # (B, L)
        x = self.token_embed(tokens) + self.pos_embed[:, :n]  # (B, L, width)
        if self.pool == "eos":
            causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()
            mask = causal[None, None] & valid[:, None, None, :]  # (B, 1, L, L)
        else:
            mask = valid[:, None, None, :].expand(b, 1, n, n)  # (B, 1, L, L)
        # a padded query row must still see at least one key: let it see itself
        mask = mask | torch.eye(n, dtype=torch.bool, device=tokens.device)[None, None]
        return self.norm(self.transformer(x, attn_mask=mask))

    def pool_tokens(self, x: Tensor, valid: Tensor) -> Tensor:
        """(B, L, width) features and (B, L) bool validity -> (B, width)."""
        if self.pool == "eos":
            last = valid.long().cumsum(1).argmax(1)  # index of the last real token, (B,)
            return x[torch.arange(x.shape[0], device=x.device), last]
        w = valid.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        return (x * w).sum(1) / w.sum(1).clamp_min(1.0)
