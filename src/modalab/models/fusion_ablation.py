"""The fusion-ablation model (one agreement classifier per fusion kind, ``fusion/agreement.py``)
and its binary agreement loss, as registered builders with their recipe schemas. The task that
trains and compares the variants is ``tasks/fusion_ablation.py``.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from modalab.config import NamedBase
from modalab.fusion.agreement import KINDS, agreement_model
from modalab.models.captioner import EncoderConfig
from modalab.registry import register


class AblationModelConfig(NamedBase):
    variants: list[str] = Field(default_factory=lambda: list(KINDS), min_length=1)
    dim: int = Field(64, gt=0)
    depth: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)
    patch_size: int = Field(4, gt=0)
    context_length: int = Field(12, gt=2)
    grad_clip: float | None = Field(1.0, gt=0, description="per-variant gradient clipping")
    image_encoder: EncoderConfig | None = Field(
        None, description="a frozen pre-trained image tower (as in the captioner); None = raw patches"
    )

    @field_validator("variants")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [k for k in v if k not in KINDS]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"model.variants: {v} must be distinct names from {list(KINDS)}")
        return v


@register("model", "fusion_ablation", schema=AblationModelConfig)
def build_fusion_ablation(
    cfg: AblationModelConfig, *, image_size: int, channels: int, vocab_size: int,
    image_token_dim: int | None = None,
) -> nn.ModuleDict:
    """One agreement classifier per fusion kind (early, late, gated cross-attention, MoME)."""
    return nn.ModuleDict({
        k: agreement_model(k, image_size=image_size, channels=channels, patch=cfg.patch_size,
                           vocab_size=vocab_size, context_length=cfg.context_length,
                           dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, image_token_dim=image_token_dim)
        for k in cfg.variants
    })


class AgreementLossConfig(NamedBase):
    pass


@register("loss", "binary_agreement", schema=AgreementLossConfig)
def build_binary_agreement(cfg: AgreementLossConfig) -> Any:
    """Binary cross-entropy of an agreement logit (B,) against 0/1 labels (B,)."""
    return lambda logits, labels: F.binary_cross_entropy_with_logits(logits, labels.float())
