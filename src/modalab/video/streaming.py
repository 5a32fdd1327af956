"""Streaming a video longer than a model's window through a fixed-size memory, in batches and
with gradients.

``merging.StreamingMemory`` is the reference: one video, one frame at a time, detached; when the
bank holds more than ``capacity`` entries the most similar pair of temporally adjacent entries
(cosine similarity) is replaced by its size-weighted mean. ``MemoryBank`` does exactly that for a
batch of videos at once and keeps the autograd graph through the averages (the choice of which
pair to merge is discrete and carries no gradient), so a model can be trained through the memory.

``stream`` feeds a video window by window: ``encode`` sees at most ``window`` frames per call, so
the frame activations held at any time are bounded by one window however long the video is, and
the bank never holds more than ``capacity + 1`` entries. Frame features are per-frame (no
interaction across frames before the memory), so the result does not depend on the window size.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


class MemoryBank:
    """Batched, differentiable ``StreamingMemory``.

    ``add(frames (B, T, D))`` appends T frames in order, merging after each one that takes the
    bank past ``capacity``. ``features`` (B, K, D), ``sizes`` (B, K) (frames per entry) and
    ``spans`` (B, K, 2) (first and last frame index, inclusive) stay in temporal order, K <=
    capacity.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"MemoryBank capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.features: torch.Tensor | None = None  # (B, K, D)
        self.sizes: torch.Tensor | None = None  # (B, K)
        self.spans: torch.Tensor | None = None  # (B, K, 2) int64
        self.seen = 0  # frames added so far

    def __len__(self) -> int:
        return 0 if self.features is None else self.features.shape[1]

    def add(self, frames: torch.Tensor) -> None:
        if frames.dim() != 3:
            raise ValueError(f"MemoryBank.add expects frames (B, T, D), got shape {tuple(frames.shape)}")
        b = frames.shape[0]
        for t in range(frames.shape[1]):
            f = frames[:, t : t + 1]  # (B, 1, D)
            s = torch.ones(b, 1, dtype=frames.dtype, device=frames.device)
            span = torch.full((b, 1, 2), self.seen, dtype=torch.long, device=frames.device)
            self.seen += 1
            if self.features is None:
                self.features, self.sizes, self.spans = f, s, span
                continue
            if self.features.shape[0] != b:
                raise ValueError(f"MemoryBank holds {self.features.shape[0]} videos, add got {b}")
            self.features = torch.cat([self.features, f], 1)  # (B, K+1, D)
            self.sizes = torch.cat([self.sizes, s], 1)  # (B, K+1)
            self.spans = torch.cat([self.spans, span], 1)  # (B, K+1, 2)
            if self.features.shape[1] > self.capacity:
                self._merge_most_similar()

    def _merge_most_similar(self) -> None:
        x, s, sp = self.features, self.sizes, self.spans
        b, k1, d = x.shape
        with torch.no_grad():
            f = F.normalize(x.float(), dim=-1)  # (B, K+1, D)
            i = (f[:, :-1] * f[:, 1:]).sum(-1).argmax(1)  # (B,) left entry of the merged pair
        rows = torch.arange(b, device=x.device)
        s0, s1 = s[rows, i], s[rows, i + 1]  # (B,)
        merged = (x[rows, i] * s0[:, None] + x[rows, i + 1] * s1[:, None]) / (s0 + s1)[:, None]  # (B, D)
        pos = torch.arange(k1, device=x.device)[None]  # (1, K+1)
        at_i = (pos == i[:, None])  # (B, K+1)
        x = torch.where(at_i[..., None], merged[:, None], x)  # (B, K+1, D)
        s = torch.where(at_i, (s0 + s1)[:, None], s)
        sp = sp.clone()
        sp[rows, i, 1] = sp[rows, i + 1, 1]
        keep = pos != (i + 1)[:, None]  # (B, K+1): drop the right entry of the pair
        self.features = x[keep].reshape(b, k1 - 1, d)  # (B, K, D)
        self.sizes = s[keep].reshape(b, k1 - 1)
        self.spans = sp[keep].reshape(b, k1 - 1, 2)


def stream(
    encode: Callable[[torch.Tensor], torch.Tensor], video: torch.Tensor, window: int, capacity: int,
    on_window: Callable[[MemoryBank], None] | None = None,
) -> MemoryBank:
    """Encode ``video`` (B, T, C, H, W) ``window`` frames at a time with ``encode``
    ((B, w, C, H, W) -> (B, w, D), w <= window) into a ``MemoryBank`` of ``capacity`` entries.
    ``on_window`` (tests, probes) is called with the bank after each window."""
    if window < 1:
        raise ValueError(f"stream: window must be >= 1, got {window}")
    bank = MemoryBank(capacity)
    for start in range(0, video.shape[1], window):
        bank.add(encode(video[:, start : start + window]))  # (B, w, D)
        if on_window is not None:
            on_window(bank)
    return bank
