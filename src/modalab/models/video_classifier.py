"""Video models: a clip classifier (frame encoder + temporal module); the temporal localiser built
on the same frame encoders is in ``models/temporal_localizer.py``.

Both take their parts as modules. Shapes: a video batch is (B, T, C, H, W) float; a frame encoder
maps it to tokens (B, T, N, D); a temporal module maps tokens to a clip vector (B, D).

``build_video_classifier`` assembles the variants a recipe compares by name:
mean | attention | divided | factorised | tome.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from modalab.config import NamedBase
from modalab.registry import register
from modalab.video.merging import ToMeEncoder
from modalab.video.temporal import (
    AttentionPool, DividedEncoder, FactorisedEncoder, MeanPool, transformer,
)

Temporal = Literal["mean", "attention", "divided", "factorised", "tome"]


class PatchFrameEncoder(nn.Module):
    """Per-frame patch embedding with learned space and time position embeddings.

    (B, T, C, H, W) -> (B, T, N, D), N = (H / patch) * (W / patch), T <= max_frames.
    """

    def __init__(self, dim: int, image_size: int, patch: int, channels: int = 3,
                 max_frames: int = 64) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} must be a multiple of patch {patch}")
        n = (image_size // patch) ** 2
        self.embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, 1, n, dim) * 0.02)
        self.time = nn.Parameter(torch.randn(1, max_frames, 1, dim) * 0.02)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        x = self.embed(video.flatten(0, 1))  # (B*T, D, h, w)
        x = x.flatten(2).transpose(1, 2).reshape(b, t, -1, x.shape[1])  # (B, T, N, D)
        return x + self.pos + self.time[:, :t]


class CNNFrameEncoder(nn.Module):
    """Small per-frame CNN (3 stride-2 conv + BatchNorm stages, pooled to grid x grid cells).

    (B, T, C, H, W) -> (B, T, grid*grid, D) plus a learned time embedding.
    """

    def __init__(self, dim: int, channels: int = 3, grid: int = 4, max_frames: int = 64) -> None:
        super().__init__()
        w = dim // 2
        self.net = nn.Sequential(
            nn.Conv2d(channels, w // 2, 3, 2, 1), nn.BatchNorm2d(w // 2), nn.GELU(),
            nn.Conv2d(w // 2, w, 3, 2, 1), nn.BatchNorm2d(w), nn.GELU(),
            nn.Conv2d(w, dim, 3, 2, 1), nn.BatchNorm2d(dim), nn.GELU(),
            nn.AdaptiveAvgPool2d(grid),
        )
        self.time = nn.Parameter(torch.randn(1, max_frames, 1, dim) * 0.02)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        x = self.net(video.flatten(0, 1))  # (B*T, D, g, g)
        x = x.flatten(2).transpose(1, 2).reshape(b, t, -1, x.shape[1])  # (B, T, N, D)
        return x + self.time[:, :t]


class PoolOverTime(nn.Module):
    """Mean over each frame's tokens, then a temporal pool: (B, T, N, D) -> (B, D)."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pool(tokens.mean(2))  # (B, T, D) -> (B, D)


class VideoClassifier(nn.Module):
    """frame_encoder (B, T, C, H, W) -> (B, T, N, D); temporal -> (B, D); head -> (B, classes)."""

    def __init__(self, frame_encoder: nn.Module, temporal: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.frame_encoder, self.temporal, self.head = frame_encoder, temporal, head

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.temporal(self.frame_encoder(video)))


def temporal_module(kind: Temporal, dim: int, depth: int = 2, heads: int = 4,
                    r: int = 0) -> nn.Module:
    """The temporal module named ``kind`` over (B, T, N, D) tokens -> (B, D)."""
    if kind == "mean":
        return PoolOverTime(MeanPool())
    if kind == "attention":
        return PoolOverTime(AttentionPool(dim))
    if kind == "divided":
        return DividedEncoder(dim, depth, heads)
    if kind == "factorised":
        return FactorisedEncoder(dim, transformer(dim, depth, heads), transformer(dim, 1, heads))
    if kind == "tome":
        return ToMeEncoder(dim, depth, heads, r)
    raise ValueError(
        f"unknown temporal module '{kind}'; "
        "choose one of mean, attention, divided, factorised, tome"
    )


def frame_encoder(
    kind: Literal["patch", "cnn"], dim: int, image_size: int, patch: int = 16, channels: int = 3,
    grid: int = 4, max_frames: int = 64,
) -> nn.Module:
    """(B, T, C, H, W) -> (B, T, N, D): patch embedding (N = (H/patch)^2) or CNN (N = grid^2)."""
    if kind == "patch":
        return PatchFrameEncoder(dim, image_size, patch, channels, max_frames)
    if kind == "cnn":
        return CNNFrameEncoder(dim, channels, grid, max_frames)
    raise ValueError(f"unknown frame encoder '{kind}'; choose patch or cnn")


def build_video_classifier(
    num_classes: int, temporal: Temporal = "mean", encoder: Literal["patch", "cnn"] = "patch",
    dim: int = 64, depth: int = 2, heads: int = 4, r: int = 0, image_size: int = 64,
    patch: int = 16, channels: int = 3, max_frames: int = 64, grid: int = 4,
) -> VideoClassifier:
    """A VideoClassifier from plain numbers (what a registered model builder would call)."""
    enc = frame_encoder(encoder, dim, image_size, patch, channels, grid, max_frames)
    head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
    return VideoClassifier(enc, temporal_module(temporal, dim, depth, heads, r), head)


# ---------------------------------------------------------------------------- registered builders


class CrossEntropyConfig(NamedBase):
    label_smoothing: float = Field(0.0, ge=0, lt=1)


@register("loss", "action_cross_entropy", schema=CrossEntropyConfig)
def build_action_cross_entropy(cfg: CrossEntropyConfig) -> nn.Module:
    """Softmax cross-entropy over action classes (optional label smoothing)."""
    return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


class VideoClassifierConfig(NamedBase):
    temporal: Temporal = "divided"
    encoder: Literal["patch", "cnn"] = "cnn"
    dim: int = Field(64, gt=0)
    depth: int = Field(2, gt=0, description="blocks of the temporal module (mean/attention: unused)")
    heads: int = Field(4, gt=0)
    r: int = Field(0, ge=0, description="ToMe tokens merged per layer (temporal=tome)")
    patch: int = Field(8, gt=0, description="patch size (encoder=patch)")
    grid: int = Field(4, gt=0, description="grid x grid tokens per frame (encoder=cnn)")


@register("model", "video_classifier", schema=VideoClassifierConfig)
def build_video_classifier_model(
    cfg: VideoClassifierConfig, *, num_classes: int, image_size: int, channels: int, max_frames: int
) -> VideoClassifier:
    """Video classifier: per-frame encoder + temporal module (mean/attention/divided/factorised/tome)."""
    return build_video_classifier(
        num_classes, cfg.temporal, cfg.encoder, cfg.dim, cfg.depth, cfg.heads, cfg.r, image_size,
        cfg.patch, channels, max_frames, cfg.grid,
    )
