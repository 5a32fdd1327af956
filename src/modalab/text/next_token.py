"""The next-token cross-entropy (loss ``next_token``) for captioning and language modelling."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from modalab.config import NamedBase
from modalab.registry import register
from modalab.text.tokenizer import PAD


class NextTokenConfig(NamedBase):
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class NextTokenLoss(nn.Module):
    """Cross-entropy of logits (B, T, V) against targets (B, T), padding (id 0) ignored."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
            ignore_index=PAD, label_smoothing=self.label_smoothing,
        )


@register("loss", "next_token", schema=NextTokenConfig)
def build_next_token(cfg: NextTokenConfig) -> NextTokenLoss:
    """Next-token cross-entropy for captioning / language modelling (padding ignored)."""
    return NextTokenLoss(cfg.label_smoothing)
