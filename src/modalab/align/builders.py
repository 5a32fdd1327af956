"""Registered loss builders: thin ``nn.Module`` wrappers over the functional losses.

Every objective module has the same call signature so the training step does not care which one
a recipe picked::

    loss = objective(image_emb, text_emb, logit_scale=..., logit_bias=..., labels=...)

``image_emb`` and ``text_emb`` are (B, D) normalised embeddings, ``logit_scale`` is 1/tau
(exponentiated), ``logit_bias`` is a scalar or None and ``labels`` a (B,) tensor or None.
"""

from __future__ import annotations

from torch import Tensor, nn

from modalab.align.losses import info_nce, siglip
from modalab.config import LossBase
from modalab.registry import register


class InfoNCE(nn.Module):
    """Symmetric InfoNCE over the batch (CLIP)."""

    uses_bias = False

    def forward(
        self,
        image_emb: Tensor,
        text_emb: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> Tensor:
        return info_nce(image_emb, text_emb, logit_scale)


class SigLIP(nn.Module):
    """Pairwise sigmoid loss (SigLIP); needs the model's learnable logit bias."""

    uses_bias = True

    def forward(
        self,
        image_emb: Tensor,
        text_emb: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> Tensor:
        if logit_bias is None:
            raise ValueError(
                "the siglip loss needs a logit bias: set model.init_logit_bias (e.g. -10.0)"
            )
        return siglip(image_emb, text_emb, logit_scale, logit_bias)


@register("loss", "info_nce", schema=LossBase)
def build_info_nce(cfg: LossBase) -> nn.Module:
    """Symmetric InfoNCE (CLIP): image->text and text->image cross-entropy, averaged."""
    return InfoNCE()


@register("loss", "siglip", schema=LossBase)
def build_siglip(cfg: LossBase) -> nn.Module:
    """Sigmoid pairwise loss (SigLIP): +1 labels on the diagonal, -1 elsewhere."""
    return SigLIP()
