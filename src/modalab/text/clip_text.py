"""The text-tower layout of pretrained dual encoders (CLIP, SigLIP), on modalab's blocks.

Token + learned position embeddings, pre-norm blocks, a final norm, then one pooled token:

- ``pool="eos_id"``: the first position holding ``eos_id`` (CLIP after transformers PR #24773);
- ``pool="argmax"``: the position of the largest id (original CLIP: end-of-text is the last id);
- ``pool="last"``: the last position, padding included (SigLIP pads to a fixed length).

``causal=True`` masks attention to earlier positions (CLIP); padding after the pooled token then
cannot change it, so no padding mask is needed. SigLIP attends both ways over the padded sequence,
as it was trained. The tokens are the checkpoint's own ids (no id is reserved for padding).

Shapes: tokens (B, L) int64 -> (B, width); ``forward_tokens`` -> (B, L, width).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.layers import Activation, Transformer

TextPool = Literal["eos_id", "argmax", "last"]


class PretrainedTextTransformer(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        width: int,
        depth: int,
        heads: int,
        mlp_hidden: int,
        act: Activation = F.gelu,
        norm_eps: float = 1e-5,
        causal: bool = True,
        pool: TextPool = "eos_id",
        eos_id: int | None = None,
    ) -> None:
        super().__init__()
        if pool not in ("eos_id", "argmax", "last"):
            raise ValueError(f"pool {pool!r} is not one of 'eos_id', 'argmax', 'last'")
        if pool == "eos_id" and eos_id is None:
            raise ValueError("pool 'eos_id' needs eos_id")
        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.transformer = Transformer(width, depth, heads, act=act, norm_eps=norm_eps, mlp_hidden=mlp_hidden)
        self.norm = nn.LayerNorm(width, eps=norm_eps)
        self.causal, self.pool, self.eos_id = causal, pool, eos_id
        self.width, self.context_length, self.vocab_size = width, context_length, vocab_size
        nn.init.normal_(self.token_embed.weight, std=0.02)

    def forward_tokens(self, tokens: Tensor) -> Tensor:
        """(B, L) int64 -> (B, L, width)."""
        n = tokens.shape[1]
        if n > self.context_length:
            raise ValueError(f"token length {n} exceeds context_length {self.context_length}")
        x = self.token_embed(tokens) + self.pos_embed[:n]  # (B, L, width)
        return self.norm(self.transformer(x, is_causal=self.causal))

    def pool_tokens(self, x: Tensor, tokens: Tensor) -> Tensor:
        """(B, L, width) features and their (B, L) ids -> (B, width)."""
        if tokens.dtype == torch.bool:
            raise ValueError("this text tower pools by token ids, not a validity mask; token-level losses "
                             "(FILIP-style) are not supported with pretrained text towers")
        if self.pool == "last":
            return x[:, -1]
        if self.pool == "argmax":
            idx = tokens.argmax(dim=-1)  # (B,)
        else:
            hit = tokens == self.eos_id  # (B, L)
            if not bool(hit.any(dim=1).all()):
                raise ValueError(f"a text has no end-of-text id {self.eos_id}; "
                                 "tokenize with the checkpoint's tokenizer")
            idx = hit.int().argmax(dim=-1)  # first end-of-text, (B,)
        return x[torch.arange(x.shape[0], device=x.device), idx]

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, L) int64 -> (B, width)."""
        return self.pool_tokens(self.forward_tokens(tokens), tokens)
