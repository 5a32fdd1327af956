"""Video models: a clip classifier (frame encoder + temporal module) and a temporal localiser.

Both take their parts as modules. Shapes: a video batch is (B, T, C, H, W) float; a frame encoder
maps it to tokens (B, T, N, D); a temporal module maps tokens to a clip vector (B, D).

``build_video_classifier`` assembles the variants a recipe compares by name:
mean | attention | divided | factorised | tome.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from modalab.config import NamedBase
from modalab.registry import register
from modalab.video.localization import nms, soft_nms
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


def build_temporal_localizer(
    num_classes: int, encoder: Literal["patch", "cnn"] = "cnn", dim: int = 64, depth: int = 2,
    heads: int = 4, kernel: int = 3, image_size: int = 32, patch: int = 8, channels: int = 3,
    max_frames: int = 256, grid: int = 4,
) -> TemporalLocalizer:
    """frame encoder -> transformer over time (depth blocks) -> LocalizationHead."""
    enc = frame_encoder(encoder, dim, image_size, patch, channels, grid, max_frames)
    return TemporalLocalizer(enc, transformer(dim, depth, heads), LocalizationHead(dim, num_classes, kernel))


# ------------------------------------------------------------------------------ localisation


class LocalizationHead(nn.Module):
    """Per-time-step class logits and distances to the segment start / end (ActionFormer-style).

    (B, T, D) -> (cls_logits (B, T, C), offsets (B, T, 2) >= 0, in time steps from the step centre).
    """

    def __init__(self, dim: int, num_classes: int, kernel: int = 3, prior: float = 0.01) -> None:
        super().__init__()
        pad = kernel // 2
        self.cls = nn.Sequential(nn.Conv1d(dim, dim, kernel, padding=pad), nn.GELU(),
                                 nn.Conv1d(dim, num_classes, kernel, padding=pad))
        self.reg = nn.Sequential(nn.Conv1d(dim, dim, kernel, padding=pad), nn.GELU(),
                                 nn.Conv1d(dim, 2, kernel, padding=pad))
        nn.init.constant_(self.cls[-1].bias, -float(np.log((1 - prior) / prior)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.transpose(1, 2)  # (B, D, T)
        return self.cls(h).transpose(1, 2), F.relu(self.reg(h)).transpose(1, 2)


class TemporalLocalizer(nn.Module):
    """frame_encoder -> mean over tokens (B, T, D) -> backbone (B, T, D) -> LocalizationHead."""

    def __init__(self, frame_encoder: nn.Module, backbone: nn.Module, head: LocalizationHead):
        super().__init__()
        self.frame_encoder, self.backbone, self.head = frame_encoder, backbone, head

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.frame_encoder(video).mean(2)  # (B, T, D)
        return self.head(self.backbone(feats))


def localization_targets(
    segments: Sequence[tuple[float, float, int]], num_steps: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training targets from segments (start, end, label) in time steps (end exclusive).

    A step t (centre t + 0.5) inside a segment is positive for its label, with offsets
    (t + 0.5 - start, end - t - 0.5); where segments overlap, the shortest wins.
    Returns cls (T, C) float {0, 1} and offsets (T, 2) float (0 at negative steps).
    """
    cls = torch.zeros(num_steps, num_classes)
    off = torch.zeros(num_steps, 2)
    best = torch.full((num_steps,), float("inf"))
    centres = torch.arange(num_steps, dtype=torch.float32) + 0.5
    for s, e, y in segments:
        inside = (centres > s) & (centres < e) & ((e - s) < best)
        cls[inside] = 0.0
        cls[inside, int(y)] = 1.0
        off[inside, 0] = centres[inside] - s
        off[inside, 1] = e - centres[inside]
        best[inside] = e - s
    return cls, off


def localization_loss(
    cls_logits: torch.Tensor, offsets: torch.Tensor, cls_t: torch.Tensor, off_t: torch.Tensor,
    alpha: float = 0.25, gamma: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid focal loss over all steps and 1 - tIoU on positive steps, both per positive.

    Inputs (B, T, C) / (B, T, 2) predictions and targets. Returns (cls_loss, reg_loss).
    """
    pos = cls_t.sum(-1) > 0  # (B, T)
    npos = pos.sum().clamp_min(1).to(cls_logits.dtype)
    p = cls_logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(cls_logits, cls_t, reduction="none")
    p_t = p * cls_t + (1 - p) * (1 - cls_t)
    a_t = alpha * cls_t + (1 - alpha) * (1 - cls_t)
    cls_loss = (a_t * (1 - p_t) ** gamma * ce).sum() / npos
    if not pos.any():
        return cls_loss, offsets.sum() * 0.0
    po, pt = offsets[pos], off_t[pos]  # (P, 2)
    inter = torch.minimum(po[:, 0], pt[:, 0]) + torch.minimum(po[:, 1], pt[:, 1])
    union = po.sum(-1) + pt.sum(-1) - inter
    reg_loss = (1 - inter / union.clamp_min(1e-6)).sum() / npos
    return cls_loss, reg_loss


def decode_segments(
    cls_logits: torch.Tensor, offsets: torch.Tensor, seconds_per_step: float, video: str = "",
    score_threshold: float = 0.05, method: Literal["hard", "linear", "gaussian"] = "gaussian",
    iou_threshold: float = 0.5, sigma: float = 0.5, max_segments: int = 100,
) -> list[dict]:
    """One video's outputs (T, C) / (T, 2) -> predictions for ``mean_average_precision``.

    Every (step, class) with sigmoid score >= score_threshold proposes [t + 0.5 - d_s,
    t + 0.5 + d_e] (seconds); per class, NMS (hard) or Soft-NMS (linear / gaussian) then keeps at
    most max_segments overall by score.
    """
    scores = cls_logits.detach().float().sigmoid().cpu().numpy()  # (T, C)
    off = offsets.detach().float().cpu().numpy()  # (T, 2)
    centres = np.arange(scores.shape[0]) + 0.5
    segs_all = np.stack([centres - off[:, 0], centres + off[:, 1]], -1) * seconds_per_step
    preds: list[dict] = []
    for c in range(scores.shape[1]):
        t_idx = np.nonzero(scores[:, c] >= score_threshold)[0]
        if len(t_idx) == 0:
            continue
        segs, sc = segs_all[t_idx], scores[t_idx, c]
        if method == "hard":
            keep = nms(segs, sc, iou_threshold)
            kept_scores = sc[keep]
        else:
            keep, kept_scores = soft_nms(segs, sc, method, sigma, iou_threshold=iou_threshold)
        for k, s in zip(keep, kept_scores):
            preds.append({"video": video, "label": c, "start": float(segs[k, 0]),
                          "end": float(segs[k, 1]), "score": float(s)})
    preds.sort(key=lambda p: -p["score"])
    return preds[:max_segments]


# ---------------------------------------------------------------------------- registered builders


class VideoClassifierConfig(NamedBase):
    temporal: Temporal = "divided"
    encoder: Literal["patch", "cnn"] = "cnn"
    dim: int = Field(64, gt=0)
    depth: int = Field(2, gt=0, description="blocks of the temporal module (mean/attention: unused)")
    heads: int = Field(4, gt=0)
    r: int = Field(0, ge=0, description="ToMe tokens merged per layer (temporal=tome)")
    patch: int = Field(8, gt=0, description="patch size (encoder=patch)")
    grid: int = Field(4, gt=0, description="grid x grid tokens per frame (encoder=cnn)")


class TemporalLocalizerConfig(NamedBase):
    encoder: Literal["patch", "cnn"] = "cnn"
    dim: int = Field(64, gt=0)
    depth: int = Field(2, gt=0, description="transformer blocks over time")
    heads: int = Field(4, gt=0)
    kernel: int = Field(3, gt=0, description="temporal conv width of the head")
    patch: int = Field(8, gt=0)
    grid: int = Field(4, gt=0)


@register("model", "video_classifier", schema=VideoClassifierConfig)
def build_video_classifier_model(
    cfg: VideoClassifierConfig, *, num_classes: int, image_size: int, channels: int, max_frames: int
) -> VideoClassifier:
    """Video classifier: per-frame encoder + temporal module (mean/attention/divided/factorised/tome)."""
    return build_video_classifier(
        num_classes, cfg.temporal, cfg.encoder, cfg.dim, cfg.depth, cfg.heads, cfg.r, image_size,
        cfg.patch, channels, max_frames, cfg.grid,
    )


@register("model", "temporal_localizer", schema=TemporalLocalizerConfig)
def build_temporal_localizer_model(
    cfg: TemporalLocalizerConfig, *, num_classes: int, image_size: int, channels: int,
    max_frames: int,
) -> TemporalLocalizer:
    """Temporal action localiser: frame encoder + transformer over time + class/offset head."""
    return build_temporal_localizer(
        num_classes, cfg.encoder, cfg.dim, cfg.depth, cfg.heads, cfg.kernel, image_size,
        cfg.patch, channels, max_frames, cfg.grid,
    )
