"""Temporal action localisation: a frame encoder -> transformer over time -> per-step class and
offset head (ActionFormer-style), its training targets and loss (loss ``action_localization``),
and decoding of per-step predictions into scored segments (with NMS / soft-NMS).

Shapes: a long video is (B, T, C, H, W); the head gives cls_logits (B, T, C) and offsets (B, T, 2).
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from modalab.config import NamedBase
from modalab.models.video_classifier import frame_encoder
from modalab.registry import register
from modalab.video.localization import nms, soft_nms
from modalab.video.temporal import transformer


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


def build_temporal_localizer(
    num_classes: int, encoder: Literal["patch", "cnn"] = "cnn", dim: int = 64, depth: int = 2,
    heads: int = 4, kernel: int = 3, image_size: int = 32, patch: int = 8, channels: int = 3,
    max_frames: int = 256, grid: int = 4,
) -> TemporalLocalizer:
    """frame encoder -> transformer over time (depth blocks) -> LocalizationHead."""
    enc = frame_encoder(encoder, dim, image_size, patch, channels, grid, max_frames)
    return TemporalLocalizer(enc, transformer(dim, depth, heads), LocalizationHead(dim, num_classes, kernel))


# ----------------------------------------------------------------------------------- loss


class LocalizationLossConfig(NamedBase):
    alpha: float = Field(0.25, ge=0, le=1, description="focal loss positive weight")
    gamma: float = Field(2.0, ge=0, description="focal loss focusing exponent")
    reg_weight: float = Field(1.0, ge=0, description="weight of the 1 - tIoU offset loss")


class ActionLocalizationLoss(nn.Module):
    """Sigmoid focal loss on per-step classes + reg_weight * (1 - tIoU) on positive steps.

    forward(cls_logits (B, T, C), offsets (B, T, 2), cls_t, off_t) -> (loss, {"cls", "reg"}).
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, reg_weight: float = 1.0) -> None:
        super().__init__()
        self.alpha, self.gamma, self.reg_weight = alpha, gamma, reg_weight

    def forward(
        self, cls_logits: Tensor, offsets: Tensor, cls_t: Tensor, off_t: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        cls_loss, reg_loss = localization_loss(cls_logits, offsets, cls_t, off_t, self.alpha, self.gamma)
        logs = {"loss_cls": float(cls_loss.detach()), "loss_reg": float(reg_loss.detach())}
        return cls_loss + self.reg_weight * reg_loss, logs


@register("loss", "action_localization", schema=LocalizationLossConfig)
def build_action_localization(cfg: LocalizationLossConfig) -> ActionLocalizationLoss:
    """Focal classification + 1 - tIoU regression loss for per-step action localisation."""
    return ActionLocalizationLoss(cfg.alpha, cfg.gamma, cfg.reg_weight)


# ---------------------------------------------------------------------------- registered builder


class TemporalLocalizerConfig(NamedBase):
    encoder: Literal["patch", "cnn"] = "cnn"
    dim: int = Field(64, gt=0)
    depth: int = Field(2, gt=0, description="transformer blocks over time")
    heads: int = Field(4, gt=0)
    kernel: int = Field(3, gt=0, description="temporal conv width of the head")
    patch: int = Field(8, gt=0)
    grid: int = Field(4, gt=0)


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
