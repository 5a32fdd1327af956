"""Pooling frame embeddings into one video embedding for video-text retrieval (CLIP4Clip).

CLIP4Clip (Luo et al. 2021) embeds each frame with the image tower and compares a pooled video
vector with the caption. Three poolers, all on frame features (B, T, D):

- ``MeanPool`` (``video/temporal.py``; CLIP4Clip "meanP"): order-free by construction, the mean of
  a set of frames is the same in any order.
- :class:`SeqTransfPool` (CLIP4Clip "seqTransf"): learned frame-position embeddings, a transformer
  over the T frames, a residual connection to the input frames, then the mean: (B, T, D) -> (B, D).
- :class:`FrameCaptionAttention` (text-conditioned, as in X-Pool, Gorti et al. 2022): the caption is
  the query, frames are keys and values; every caption gets its own view of every video, so the
  output is (Nt, Nv, D) and the similarity is computed per caption-video pair.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modalab.video.temporal import transformer


class SeqTransfPool(nn.Module):
    """CLIP4Clip seqTransf: x + pos -> transformer -> + x -> mean over T. (B, T, D) -> (B, D)."""

    def __init__(self, dim: int, depth: int = 2, heads: int = 4, max_frames: int = 64) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, max_frames, dim) * 0.02)
        self.body = transformer(dim, depth, heads)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[1]
        if t > self.pos.shape[1]:
            raise ValueError(f"SeqTransfPool: {t} frames exceed max_frames {self.pos.shape[1]}")
        return (self.body(x + self.pos[:, :t]) + x).mean(1)  # (B, T, D) -> (B, D)


class FrameCaptionAttention(nn.Module):
    """Caption-conditioned pooling: softmax_t(q(text) . k(frame_t) / sqrt(D)) over the frames.

    forward(frames (Nv, T, D), text (Nt, D)) -> (Nt, Nv, D): the video seen from each caption,
    ``LayerNorm(out(sum_t w_t v(frame_t)))`` plus the mean frame (residual, as X-Pool).
    """

    def __init__(self, dim: int, max_frames: int = 64) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.pos = nn.Parameter(torch.randn(1, max_frames, dim) * 0.02)  # where in time a frame is
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.scale = dim ** -0.5

    def forward(self, frames: Tensor, text: Tensor) -> Tensor:
        x = frames + self.pos[:, : frames.shape[1]]  # (Nv, T, D)
        q = self.q(text)  # (Nt, D)
        k, v = self.k(x), self.v(x)  # (Nv, T, D)
        w = torch.einsum("ad,btd->abt", q, k).mul(self.scale).softmax(-1)  # (Nt, Nv, T)
        pooled = torch.einsum("abt,btd->abd", w, v)  # (Nt, Nv, D)
        return self.norm(self.out(pooled)) + frames.mean(1)[None]  # (Nt, Nv, D)
