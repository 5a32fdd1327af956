"""A factorised video classifier that reads videos longer than its window through a streaming
memory (chapter 5.4.3 is an empty heading; the design is ours).

Frames are encoded independently (CNN grid tokens + a spatial transformer -> one vector per frame,
ViViT factorised encoder's first stage). The plain path runs the temporal transformer over the T
frame vectors with a learned position per frame (T <= window). The streaming path encodes the
video ``window`` frames at a time into a ``video.streaming.MemoryBank`` of ``window`` entries
(similar neighbouring frames merged, order kept) and runs the same temporal transformer over the
memory entries with the position of each entry's slot. When the video fits the window nothing is
merged and the two paths give the same logits.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from modalab.config import NamedBase
from modalab.models.video_classifier import CNNFrameEncoder
from modalab.registry import register
from modalab.video.streaming import MemoryBank, stream
from modalab.video.temporal import transformer


class StreamingVideoClassifier(nn.Module):
    """frame_net (N, C, H, W) -> (N, D, g, g); spatial (B', 1+g*g, D) -> same; temporal
    (B, 1+K, D) -> same; head (B, D) -> (B, classes). ``window`` = frames per encoder call = memory
    slots = learned temporal positions.

    forward(video (B, T, C, H, W)) -> logits (B, classes) for any T (streamed past the window);
    ``forward_plain`` needs T <= window and never merges.
    """

    def __init__(self, frame_net: nn.Module, spatial: nn.Module, temporal: nn.Module,
                 head: nn.Module, dim: int, window: int) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"model.window must be >= 1, got {window}")
        self.frame_net, self.spatial, self.temporal, self.head = frame_net, spatial, temporal, head
        self.window = window
        self.cls_s = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.cls_t = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.slot_pos = nn.Parameter(torch.randn(1, window, dim) * 0.02)

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T, D), each frame on its own."""
        b, t = video.shape[:2]
        g = self.frame_net(video.flatten(0, 1))  # (B*T, D, g, g)
        tokens = g.flatten(2).transpose(1, 2)  # (B*T, g*g, D)
        tokens = torch.cat([self.cls_s.expand(b * t, 1, -1), tokens], 1)  # (B*T, 1+g*g, D)
        return self.spatial(tokens)[:, 0].reshape(b, t, -1)  # (B, T, D)

    def classify(self, entries: torch.Tensor) -> torch.Tensor:
        """Memory entries or frames (B, K, D), K <= window, in temporal order -> (B, classes)."""
        k = entries.shape[1]
        x = entries + self.slot_pos[:, :k]  # (B, K, D)
        x = torch.cat([self.cls_t.expand(x.shape[0], 1, -1), x], 1)  # (B, 1+K, D)
        return self.head(self.temporal(x)[:, 0])

    def forward_plain(self, video: torch.Tensor) -> torch.Tensor:
        if video.shape[1] > self.window:
            raise ValueError(f"forward_plain: {video.shape[1]} frames exceed the window of "
                             f"{self.window}; use forward (streaming) for longer videos")
        return self.classify(self.encode_frames(video))

    def memory(self, video: torch.Tensor, window: int | None = None) -> MemoryBank:
        """The memory after streaming ``video``; ``window`` (default self.window) only changes how
        many frames each encoder call sees, not the result."""
        return stream(self.encode_frames, video, window or self.window, self.window)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.classify(self.memory(video).features)


class VideoStreamConfig(NamedBase):
    dim: int = Field(64, gt=0)
    depth: int = Field(2, gt=0, description="spatial transformer blocks (the temporal one has 1)")
    heads: int = Field(4, gt=0)
    grid: int = Field(4, gt=0, description="grid x grid CNN tokens per frame")
    window: int = Field(8, gt=0, description="frames per encoder call = memory slots")


@register("model", "video_stream_classifier", schema=VideoStreamConfig)
def build_video_stream_classifier(
    cfg: VideoStreamConfig, *, num_classes: int, image_size: int, channels: int, max_frames: int
) -> StreamingVideoClassifier:
    """Factorised classifier with a streaming memory of ``window`` slots (any video length)."""
    del image_size, max_frames  # the CNN pools to grid x grid; the memory bounds the length
    frame_net = CNNFrameEncoder(cfg.dim, channels, cfg.grid, 1).net
    return StreamingVideoClassifier(
        frame_net, transformer(cfg.dim, cfg.depth, cfg.heads), transformer(cfg.dim, 1, cfg.heads),
        nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, num_classes)), cfg.dim, cfg.window,
    )
