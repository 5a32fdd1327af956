"""Early fusion (one transformer over all modalities' tokens) and late fusion (one encoder per
modality, fused after pooling).

Early: tokens of each modality (already projected to a common width) get a learned modality
embedding, are concatenated into one sequence and run through shared self-attention blocks, so
every layer can mix modalities; the pooled output is one (B, D) vector.

Late: each modality has its own encoder producing a pooled (B, D_m) embedding; a fuser combines
them at the end: ``ConcatFuse`` (MLP over concatenated embeddings, optionally with pairwise
products and differences) or ``ScoreFuse`` (weighted average of per-modality scores).

Padding: masks (B, N_m) with True = real; padded tokens are excluded from attention keys and from
pooling, so they never change the outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from modalab.layers import Block, Mlp, multi_head_attention, rename_on_load


# ``EncoderBlock`` (before it became ``layers.Block``) named its feed-forward ``ff``.
LEGACY_BLOCK_KEYS = {"ff.": "mlp."}


def encoder_block(dim: int, heads: int, mlp_ratio: int = 4) -> Block:
    """Pre-norm self-attention + MLP with a key-padding mask: ``layers.Block`` with the
    key-masked ``MultiHeadAttention``. Call ``blk(x, key_mask=mask)``, x (B, N, D), mask (B, N)
    True = real -> (B, N, D). Checkpoints with the old ``ff.0`` / ``ff.2`` names still load."""
    blk = Block(dim, heads, attn=multi_head_attention(dim, heads, bias=True), mlp=Mlp(dim, dim * mlp_ratio))
    rename_on_load(blk, LEGACY_BLOCK_KEYS)
    return blk


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """(B, N, D), (B, N) True = real -> (B, D) mean over real tokens."""
    if mask is None:
        return x.mean(dim=1)
    w = mask.to(x.dtype)[..., None]  # (B, N, 1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


class EarlyFusion(nn.Module):
    """Concatenated modality tokens -> shared blocks -> pooled (B, D).

    Args:
        dim: common token width.
        modalities: names, in the order their tokens are concatenated.
        blocks: modules called as ``block(x, key_mask=mask)``, (B, N, D) -> (B, N, D).
        pool: ``"cls"`` (a learned token prepended) or ``"mean"`` (masked mean).
    """

    def __init__(
        self,
        dim: int,
        modalities: Sequence[str],
        blocks: Sequence[nn.Module],
        pool: Literal["cls", "mean"] = "cls",
    ) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"fusion/early_late.py: pool must be 'cls' or 'mean', got {pool!r}")
        self.modalities = list(modalities)
        self.modality_emb = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim)
        self.pool = pool

    def forward(self, tokens: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        """tokens[name] (B, N_name, D); masks[name] (B, N_name) True = real -> (B, D)."""
        missing = [m for m in self.modalities if m not in tokens]
        if missing:
            raise ValueError(
                f"fusion/early_late.py: missing modalities {missing}; expected {self.modalities}"
            )
        masks = masks or {}
        xs, ms = [], []
        for i, name in enumerate(self.modalities):
            x = tokens[name]
            xs.append(x + self.modality_emb[i])
            m = masks.get(name)
            ms.append(m.bool() if m is not None else x.new_ones(x.shape[:2], dtype=torch.bool))
        x = torch.cat(xs, dim=1)  # (B, sum N, D)
        mask = torch.cat(ms, dim=1)  # (B, sum N)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + sum N, D)
            mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        for block in self.blocks:
            x = block(x, key_mask=mask)
        x = self.norm(x)
        return x[:, 0] if self.cls is not None else masked_mean(x, mask)


def early_fusion(
    dim: int, modalities: Sequence[str], depth: int, heads: int, pool: Literal["cls", "mean"] = "cls"
) -> EarlyFusion:
    """EarlyFusion with ``depth`` plain ``encoder_block``s."""
    return EarlyFusion(dim, modalities, [encoder_block(dim, heads) for _ in range(depth)], pool)


class ConcatFuse(nn.Module):
    """Pooled embeddings -> MLP over their concatenation -> (B, out_dim).

    With ``interactions=True`` and two modalities, ``a*b`` and ``|a-b|`` are appended (useful for
    "do these two agree?" tasks).
    """

    def __init__(self, modalities: Sequence[str], dim: int, out_dim: int, hidden: int | None = None,
                 interactions: bool = False) -> None:
        super().__init__()
        if interactions and len(modalities) != 2:
            raise ValueError(
                f"fusion/early_late.py: interactions=True needs exactly 2 modalities, got {list(modalities)}"
            )
        self.modalities, self.interactions = list(modalities), interactions
        width = dim * (len(modalities) + (2 if interactions else 0))
        hidden = hidden or dim
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, pooled: Mapping[str, Tensor]) -> Tensor:
        feats = [pooled[m] for m in self.modalities]
        if self.interactions:
            a, b = feats
            feats += [a * b, (a - b).abs()]
        return self.mlp(torch.cat(feats, dim=-1))  # (B, out_dim)


class ScoreFuse(nn.Module):
    """Per-modality heads score each pooled embedding; scores are averaged with learned weights
    (softmax over modalities, equal at init)."""

    def __init__(self, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(heads)
        self.weight_logits = nn.Parameter(torch.zeros(len(self.heads)))

    def forward(self, pooled: Mapping[str, Tensor]) -> Tensor:
        scores = torch.stack([head(pooled[m]) for m, head in self.heads.items()], dim=0)  # (M, B, C)
        w = torch.softmax(self.weight_logits, dim=0).to(scores.dtype)
        return torch.einsum("m,mbc->bc", w, scores)


class LateFusion(nn.Module):
    """Separate encoders, fused after pooling.

    Args:
        encoders: name -> module called as ``encoder(tokens, mask)`` returning (B, D_name).
        fuse: module called with ``{name: pooled}`` returning the output (e.g. logits).
    """

    def __init__(self, encoders: Mapping[str, nn.Module], fuse: nn.Module) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fuse = fuse

    def embed(
        self, tokens: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        masks = masks or {}
        return {m: enc(tokens[m], masks.get(m)) for m, enc in self.encoders.items()}

    def forward(self, tokens: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        return self.fuse(self.embed(tokens, masks))


class SingleModality(nn.Module):
    """Adapts a one-modality ``EarlyFusion`` to the ``encoder(tokens, mask)`` call of LateFusion."""

    def __init__(self, name: str, inner: EarlyFusion) -> None:
        super().__init__()
        self.name, self.inner = name, inner

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.inner({self.name: x}, None if mask is None else {self.name: mask})


def late_fusion(dim: int, modalities: Sequence[str], depth: int, heads: int, fuse: nn.Module,
                pool: Literal["cls", "mean"] = "cls") -> LateFusion:
    """One plain single-modality transformer per modality + ``fuse``."""
    encoders = {m: SingleModality(m, early_fusion(dim, [m], depth, heads, pool)) for m in modalities}
    return LateFusion(encoders, fuse)
