"""BLIP-2's Q-Former with its text branch (Li et al. 2023, section 3.1), for stage-1 pretraining.

Learned queries and text tokens run through the same layers and share each layer's
self-attention; the queries alone read the frozen image encoder (cross-attention every
``cross_every`` layers, BLIP-2: 2) and queries and text have their own feed-forward blocks. Which
positions see which is set by the self-attention mask of the objective (BLIP-2, Figure 2):

- ``itc`` uni-modal: queries see queries, text sees text (neither sees the other);
- ``itm`` bi-directional: every query and text token sees every other;
- ``itg`` multimodal causal: queries see queries only; a text token sees all queries and the
  text up to itself.

Padding keys are never attended to. Text starts with a [CLS] token for ``itc``/``itm`` and a [DEC]
token for ``itg`` (two ids past the vocabulary), as in BLIP-2. ``image_queries`` (queries only)
is what stage 2 feeds the language model.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from modalab.fusion.qformer import QFormerConfig
from modalab.layers.attention import multi_head_attention
from modalab.registry import register

Mode = Literal["itc", "itm", "itg"]


def blip2_mask(num_queries: int, text_mask: Tensor, mode: Mode) -> Tensor:
    """(B, Q + T, Q + T) bool, True = may attend, for ``text_mask`` (B, T) True = real token."""
    b, t = text_mask.shape
    q, n = num_queries, num_queries + text_mask.shape[1]
    allowed = torch.zeros(n, n, dtype=torch.bool, device=text_mask.device)
    allowed[:q, :q] = True  # queries -> queries in every mode
    if mode == "itc":
        allowed[q:, q:] = True
    elif mode == "itm":
        allowed[:, :] = True
    elif mode == "itg":
        allowed[q:, :q] = True
        allowed[q:, q:] = torch.ones(t, t, dtype=torch.bool, device=text_mask.device).tril()
    else:
        raise ValueError(f"fusion/qformer_blip2.py: mode must be itc, itm or itg, got {mode!r}")
    keys = torch.cat([text_mask.new_ones(b, q, dtype=torch.bool), text_mask.bool()], dim=1)  # (B, Q + T)
    return allowed[None] & keys[:, None, :]  # (B, Q + T, Q + T)


class Blip2Layer(nn.Module):
    """Shared self-attention; cross-attention for the query positions; separate feed-forwards."""

    def __init__(self, dim: int, heads: int, enc_dim: int, cross: bool, ff_mult: int) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = multi_head_attention(dim, heads, bias=True)
        self.norm_cross = nn.LayerNorm(dim) if cross else None
        self.cross_attn = multi_head_attention(dim, heads, kv_dim=enc_dim, bias=True) if cross else None
        self.norm_ff_query, self.norm_ff_text = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff_query = nn.Sequential(nn.Linear(dim, dim * ff_mult), nn.GELU(), nn.Linear(dim * ff_mult, dim))
        self.ff_text = nn.Sequential(nn.Linear(dim, dim * ff_mult), nn.GELU(), nn.Linear(dim * ff_mult, dim))

    def forward(self, x: Tensor, num_queries: int, mask: Tensor | None, image: Tensor | None) -> Tensor:
        """x (B, Q + T, D) [queries then text], mask (B, Q + T, Q + T), image (B, N, D_enc) -> (B, Q + T, D)."""
        x = x + self.self_attn(self.norm_self(x), attn_mask=mask)
        q, t = x[:, :num_queries], x[:, num_queries:]  # (B, Q, D), (B, T, D)
        if num_queries and self.cross_attn is not None and self.norm_cross is not None and image is not None:
            q = q + self.cross_attn(self.norm_cross(q), image)
        q = q + self.ff_query(self.norm_ff_query(q))
        t = t + self.ff_text(self.norm_ff_text(t)) if t.shape[1] else t
        return torch.cat([q, t], dim=1)


class Blip2QFormer(nn.Module):
    """Queries (+ text) -> (query states (B, Q, D), text states (B, T, D)).

    Args:
        enc_dim: image encoder width; dim, depth, heads: the Q-Former's; num_queries: BLIP-2 32.
        vocab_size: the text ids (the LM's tokenizer); [CLS] = vocab_size, [DEC] = vocab_size + 1.
        max_text_len: learned text positions.
    """

    def __init__(self, enc_dim: int, dim: int, depth: int, heads: int, num_queries: int, vocab_size: int,
                 max_text_len: int, cross_every: int = 2, ff_mult: int = 4) -> None:
        super().__init__()
        if cross_every < 1:
            raise ValueError(f"fusion/qformer_blip2.py: cross_every must be >= 1, got {cross_every}")
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.tok_emb = nn.Embedding(vocab_size + 2, dim)
        self.pos_emb = nn.Parameter(torch.randn(max_text_len, dim) * 0.01)
        self.layers = nn.ModuleList(Blip2Layer(dim, heads, enc_dim, i % cross_every == 0, ff_mult)
                                    for i in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.cls_id, self.dec_id, self.vocab_size = vocab_size, vocab_size + 1, vocab_size
        self.num_queries, self.dim = num_queries, dim

    def embed_text(self, tokens: Tensor, first: int) -> Tensor:
        """(B, T) ids with position 0 replaced by ``first`` ([CLS] / [DEC]) -> (B, T, D)."""
        tokens = torch.cat([torch.full_like(tokens[:, :1], first), tokens[:, 1:]], dim=1)
        return self.tok_emb(tokens) + self.pos_emb[: tokens.shape[1]]

    def forward(self, image: Tensor | None, tokens: Tensor | None, text_mask: Tensor | None,
                mode: Mode) -> tuple[Tensor, Tensor]:
        """image (B, N, D_enc) | None (text only), tokens (B, T) | None (queries only), text_mask (B, T)."""
        parts, q = [], 0
        if image is not None:
            parts.append(self.queries.expand(image.shape[0], -1, -1))  # (B, Q, D)
            q = self.num_queries
        mask = None
        if tokens is not None:
            parts.append(self.embed_text(tokens, self.dec_id if mode == "itg" else self.cls_id))
            tm = text_mask if text_mask is not None else torch.ones_like(tokens, dtype=torch.bool)
            mask = blip2_mask(q, tm, mode)
        x = torch.cat(parts, dim=1)  # (B, Q + T, D)
        for layer in self.layers:
            x = layer(x, q, mask, image)
        x = self.norm(x)
        return x[:, :q], x[:, q:]

    def image_queries(self, image: Tensor) -> Tensor:
        """(B, N, D_enc) -> (B, Q, D): the queries alone (what stage 2 feeds the LM)."""
        return self.forward(image, None, None, "itc")[0]


class Blip2Connector(nn.Module):
    """Stage 2: Q-Former queries -> linear -> LM prefix; holds the stage-1 heads too.

    ``itc_image`` / ``itc_text``: projections for the contrastive loss; ``itm_head``: 2-way
    match classifier; ``itg_head``: next-token logits of the Q-Former's text branch.
    """

    def __init__(self, qformer: Blip2QFormer, out_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.qformer = qformer
        d = qformer.dim
        self.proj = nn.Linear(d, out_dim)
        self.itc_image, self.itc_text = nn.Linear(d, embed_dim), nn.Linear(d, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07)
        self.itm_head = nn.Linear(d, 2)
        self.itg_head = nn.Linear(d, qformer.vocab_size)

    def forward(self, media: Tensor, media_mask: Tensor | None = None) -> tuple[Tensor, None]:
        """media (B, N, D_enc) -> ((B, Q, out_dim), None)."""
        return self.proj(self.qformer.image_queries(media)), None


class Blip2Config(QFormerConfig):
    """The Q-Former's keys (smaller defaults for the digits) plus BLIP-2's text branch."""

    dim: int = 128
    depth: int = 2
    num_queries: int = 8
    embed_dim: int = 64
    max_text_len: int = 32


@register("connector", "blip2_qformer", schema=Blip2Config)
def build_blip2_qformer(in_dim: int, out_dim: int, vocab_size: int, **cfg: int) -> Blip2Connector:
    """BLIP-2 Q-Former with its text branch and stage-1 heads; stage 2 feeds its queries to the LM."""
    c = Blip2Config(**cfg)
    qf = Blip2QFormer(in_dim, c.dim, c.depth, c.heads, c.num_queries, vocab_size, c.max_text_len,
                      c.cross_every, c.ff_mult)
    return Blip2Connector(qf, out_dim, c.embed_dim)
