"""Token reduction for long videos: ToMe bipartite soft matching and a streaming memory bank.

ToMe (Bolya et al. 2023): split tokens alternately into sets A (even positions) and B (odd),
match every A token to its most similar B token (cosine similarity of attention keys), and merge
the r most similar A tokens into their B partners by size-weighted average. Sizes (how many
original tokens a token stands for) are tracked; attention adds log(size) to the logits
(proportional attention) so a merged token counts as the tokens it replaced.

``StreamingMemory`` keeps a fixed number of frame entries for an unbounded stream: when full, the
most similar pair of temporally adjacent entries is merged (size-weighted), so long static
stretches collapse while changes keep their own entries.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from modalab.layers import Attention, register_block
from modalab.video.temporal import mlp, proportional_attention

Merge = Callable[[torch.Tensor, str], torch.Tensor]


def bipartite_soft_matching(metric: torch.Tensor, r: int, protect_first: bool = False) -> Merge:
    """Plan merging r tokens away. metric: (B, L, C) keys; returns ``merge(x, mode)`` mapping
    (B, L, D) -> (B, L - r, D), where ``mode`` is the scatter reduction ("sum" or "mean").

    r is clamped to the size of set A (ceil(L/2), minus the protected first token), so exactly
    min(r, |A|) tokens disappear. Output order: unmerged A tokens, then all B tokens.
    """
    b, length, _ = metric.shape
    r = min(r, (length - int(protect_first)) - length // 2)
    if r <= 0:
        return lambda x, mode="mean": x
    with torch.no_grad():
        m = F.normalize(metric, dim=-1)
        a, bset = m[:, ::2], m[:, 1::2]  # (B, |A|, C), (B, |B|, C)
        scores = a @ bset.transpose(-1, -2)  # (B, |A|, |B|)
        if protect_first:
            scores[:, 0, :] = float("-inf")
        node_max, node_idx = scores.max(dim=-1)  # (B, |A|)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]  # (B, |A|, 1)
        unm_idx, src_idx = edge_idx[:, r:], edge_idx[:, :r]  # (B, |A|-r, 1), (B, r, 1)
        dst_idx = node_idx[..., None].gather(1, src_idx)  # (B, r, 1)

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        src, dst = x[:, ::2], x[:, 1::2]  # (B, |A|, D), (B, |B|, D)
        n, t1, d = src.shape
        unm = src.gather(1, unm_idx.expand(n, t1 - r, d))  # (B, |A|-r, D)
        src = src.gather(1, src_idx.expand(n, r, d))  # (B, r, D)
        dst = dst.scatter_reduce(1, dst_idx.expand(n, r, d), src, reduce=mode)
        return torch.cat([unm, dst], dim=1)  # (B, L-r, D)

    return merge


def merge_wavg(
    merge: Merge, x: torch.Tensor, size: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average merge. x (B, L, D), size (B, L, 1) (ones if None) ->
    (x (B, L-r, D), size (B, L-r, 1)); sum(x * size) over tokens is preserved exactly."""
    if size is None:
        size = torch.ones_like(x[..., :1])
    x = merge(x * size, "sum")
    size = merge(size, "sum")
    return x / size, size


@register_block
class ToMeBlock(nn.Module):
    """Transformer block with proportional attention and r merges between attention and MLP.

    forward(x (B, L, D), size (B, L, 1) or None) -> (x (B, L-r, D), size (B, L-r, 1)).
    """

    def __init__(self, dim: int, heads: int, r: int, mlp_ratio: float = 4.0,
                 protect_first: bool = False) -> None:
        super().__init__()
        self.r, self.protect_first = r, protect_first
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), mlp(dim, mlp_ratio)

    def forward(
        self, x: torch.Tensor, size: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bias = None if size is None else size[..., 0].log()  # (B, L)
        out, keys = proportional_attention(self.attn, self.norm1(x), bias)
        x = x + out
        if self.r > 0:
            merge = bipartite_soft_matching(keys, self.r, self.protect_first)
            x, size = merge_wavg(merge, x, size)
        elif size is None:
            size = torch.ones_like(x[..., :1])
        return x + self.mlp(self.norm2(x)), size


class ToMeEncoder(nn.Module):
    """ToMe blocks over joint space-time tokens, then size-weighted mean: (B, L, D) -> (B, D)."""

    def __init__(self, dim: int, depth: int, heads: int, r: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ToMeBlock(dim, heads, r, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.flatten(1, 2)  # (B, T*N, D)
        size = None
        for blk in self.blocks:
            x, size = blk(x, size)
        x = self.norm(x)
        return (x * size).sum(1) / size.sum(1)


def set_merge_r(module: nn.Module, r: int) -> int:
    """Set r on every ToMeBlock inside ``module`` (ToMe applies to a trained model off the
    shelf); returns how many blocks were changed."""
    blocks = [m for m in module.modules() if isinstance(m, ToMeBlock)]
    for blk in blocks:
        blk.r = r
    return len(blocks)


def tokens_after_merging(length: int, r: int, depth: int, protect_first: bool = False) -> int:
    """Token count after ``depth`` ToMe blocks each merging up to r (clamped as in
    ``bipartite_soft_matching``)."""
    for _ in range(depth):
        length -= max(0, min(r, (length - int(protect_first)) - length // 2))
    return length


class StreamingMemory:
    """Fixed-capacity bank of frame features for a stream; merges similar neighbours when full.

    ``add(feature (D,), t)`` appends one frame; when the bank holds more than ``capacity`` entries,
    the adjacent pair with the highest cosine similarity is replaced by its size-weighted mean,
    its size the sum and its time span the union. ``features`` (K, D), ``sizes`` (K,) and
    ``spans`` [(start, end)] stay in temporal order.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"StreamingMemory capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._feats: list[torch.Tensor] = []
        self._sizes: list[float] = []
        self.spans: list[tuple[float, float]] = []

    def __len__(self) -> int:
        return len(self._feats)

    @property
    def features(self) -> torch.Tensor:
        return torch.stack(self._feats)  # (K, D)

    @property
    def sizes(self) -> torch.Tensor:
        return torch.tensor(self._sizes)  # (K,)

    def add(self, feature: torch.Tensor, t: float | None = None) -> None:
        t = float(len(self.spans) and self.spans[-1][1] + 1) if t is None else float(t)
        self._feats.append(feature.detach().reshape(-1))
        self._sizes.append(1.0)
        self.spans.append((t, t))
        if len(self._feats) > self.capacity:
            self._merge_most_similar()

    def _merge_most_similar(self) -> None:
        f = F.normalize(self.features.float(), dim=-1)  # (K, D)
        sim = (f[:-1] * f[1:]).sum(-1)  # (K-1,) similarity of neighbours i, i+1
        i = int(sim.argmax())
        s0, s1 = self._sizes[i], self._sizes[i + 1]
        self._feats[i] = (self._feats[i] * s0 + self._feats[i + 1] * s1) / (s0 + s1)
        self._sizes[i] = s0 + s1
        self.spans[i] = (self.spans[i][0], self.spans[i + 1][1])
        del self._feats[i + 1], self._sizes[i + 1], self.spans[i + 1]
