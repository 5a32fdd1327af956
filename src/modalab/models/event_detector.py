"""Sound-event tagging and detection: waveform -> frame probabilities -> clip probabilities.

``EventDetector`` is the chapter's ``AudioEventDetector`` (5.3.2) made runnable: a log-mel front end
(``audio.frontend.LogMel``, SpecAugment in training), the PANN-like ``audio.encoders.EventCNN`` with
frame logits and clip pooling ``max | mean | attention``. ``EventBCE`` trains it from clip labels
(weak labels, the AudioSet setting: detection has to emerge from the pooling) and, with
``frame_weight > 0``, also from frame labels (strong labels).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from modalab.audio.encoders import EventCNN
from modalab.audio.frontend import HOP, LogMel
from modalab.config import NamedBase
from modalab.registry import register


class EventDetector(nn.Module):
    """(B, samples) 16 kHz -> {frame_logits (B, T', C), frame_prob (B, T', C), clip_prob (B, C)}.

    ``hop_s`` is the duration of one output frame: 160 samples x the CNN's time stride / 16 kHz.
    """

    def __init__(self, frontend: LogMel, cnn: EventCNN, sr: int = 16000) -> None:
        super().__init__()
        self.frontend = frontend
        self.cnn = cnn
        self.hop_s = HOP * cnn.time_stride / sr

    def forward(self, wave: Tensor) -> dict[str, Tensor]:
        out = self.cnn(self.frontend(wave))
        # frame activity is the classification head for every pooling (attention only weights it)
        out["frame_prob"] = torch.sigmoid(out["frame_logits"])  # (B, T', C)
        return out


def _bce(p: Tensor, t: Tensor, eps: float = 1e-6) -> Tensor:
    """Binary cross-entropy on probabilities, computed in float32 (autocast-safe)."""
    p = p.float().clamp(eps, 1 - eps)
    t = t.float()
    return -(t * p.log() + (1 - t) * (1 - p).log()).mean()


class EventBCE(nn.Module):
    """BCE(clip_prob, clip_targets) + frame_weight * BCE(sigmoid(frame_logits), frame_targets).

    clip_prob, clip_targets: (B, C); frame_logits, frame_targets: (B, T', C).
    """

    def __init__(self, frame_weight: float = 0.0) -> None:
        super().__init__()
        self.frame_weight = frame_weight

    def forward(self, clip_prob: Tensor, clip_targets: Tensor, frame_logits: Tensor | None = None,
                frame_targets: Tensor | None = None) -> Tensor:
        loss = _bce(clip_prob, clip_targets)
        if self.frame_weight > 0:
            if frame_logits is None or frame_targets is None:
                raise ValueError("EventBCE(frame_weight > 0) needs frame_logits and frame_targets")
            loss = loss + self.frame_weight * nn.functional.binary_cross_entropy_with_logits(
                frame_logits.float(), frame_targets.float())
        return loss


# ---------------------------------------------------------------------------------- builders


class EventCNNConfig(NamedBase):
    n_mels: int = Field(32, gt=0, description="log-mel bands; divisible by 2 ** len(widths)")
    widths: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1)
    pooling: Literal["max", "mean", "attention"] = "attention"
    time_pool: int = Field(2, gt=0, description="time downsampling of every conv block but the first")
    dropout: float = Field(0.1, ge=0, lt=1)
    spec_augment: Literal["none", "LB", "LD", "SM", "SS"] = "none"


@register("model", "event_cnn", schema=EventCNNConfig)
def build_event_cnn(cfg: EventCNNConfig, *, n_classes: int, seed: int = 0) -> EventDetector:
    """PANN-like CNN on log-mel with frame logits and max / mean / attention clip pooling."""
    if cfg.n_mels % (2 ** len(cfg.widths)):
        raise ValueError(f"model.n_mels={cfg.n_mels} must be divisible by 2 ** len(model.widths) = "
                         f"{2 ** len(cfg.widths)}")
    aug = None if cfg.spec_augment == "none" else cfg.spec_augment
    cnn = EventCNN(n_classes, cfg.n_mels, tuple(cfg.widths), cfg.pooling, cfg.time_pool, cfg.dropout)
    return EventDetector(LogMel(cfg.n_mels, aug, seed=seed), cnn)


class EventLossConfig(NamedBase):
    frame_weight: float = Field(0.0, ge=0, description="0: clip labels only (weak); > 0 adds frame BCE")


@register("loss", "event_bce", schema=EventLossConfig)
def build_event_bce(cfg: EventLossConfig) -> EventBCE:
    """Binary cross-entropy on clip probabilities (+ frame logits when frame_weight > 0)."""
    return EventBCE(cfg.frame_weight)
