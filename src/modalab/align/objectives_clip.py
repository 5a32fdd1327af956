"""Registered ``info_nce`` and ``siglip`` losses with ``impl: naive | tiled | auto`` and
global-batch negatives.

    loss: {name: info_nce, impl: auto, auto_threshold: 4096, global_batch: auto}

Every objective module has the same call, so the training step does not care which one a recipe
picked: ``objective(image_emb, text_emb, logit_scale=..., logit_bias=..., labels=...)`` with (B, D)
normalised embeddings, ``logit_scale`` = 1/tau (exponentiated), ``logit_bias`` a scalar or None
and ``labels`` (B,) or None. ``auto`` uses the full-logits loss below ``auto_threshold`` rows
(where B x B fits comfortably and is as fast) and the tiled exact loss above. Under an initialised
process group, ``global_batch`` picks how negatives come from every rank: ``gather`` or ``ring``
(``align/distributed.py``: each rank scores its rows against all columns), ``replicate``
(``align/replicated.py``: one all-gather, then this single-process loss on the whole batch on every
rank) or ``auto`` (replicate while N x N x D is small, gather above); ``off`` keeps the loss per
rank.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from modalab.align import distributed as D
from modalab.align.losses import info_nce, same_label_mask, siglip
from modalab.align.replicated import replicate_rows, should_replicate
from modalab.align.tiled import tiled_info_nce, tiled_siglip
from modalab.config import LossBase
from modalab.registry import register


class TiledLossConfig(LossBase):
    impl: Literal["naive", "tiled", "auto"] = "auto"
    auto_threshold: int = Field(4096, gt=0, description="auto: tiled from this batch size on")
    tile: int | None = Field(None, gt=0, description="tile edge; None = from memory")
    mask_same_label: bool = Field(False, description="same-label pairs are not negatives")
    same_label: Literal["ignore", "positive"] = Field(
        "ignore", description="with mask_same_label: same-label pairs are dropped (ignore) or, "
        "siglip only, get the label +1 (positive)"
    )
    global_batch: Literal["auto", "off", "gather", "ring", "replicate"] = Field(
        "auto", description="under a process group: gather | ring (each rank its rows against all "
        "columns), replicate (one all-gather, the whole loss on every rank), auto (replicate while "
        "N*N*D <= 2^22, else gather), off (local negatives only)"
    )


class TiledContrastive(nn.Module):
    """InfoNCE (``kind='info_nce'``) or SigLIP (``kind='siglip'``) with a chosen implementation."""

    def __init__(self, kind: Literal["info_nce", "siglip"], impl: str = "auto",
                 auto_threshold: int = 4096, tile: int | None = None,
                 mask_same_label: bool = False, global_batch: str = "auto",
                 same_label: str = "ignore") -> None:
        super().__init__()
        self.kind, self.impl, self.auto_threshold, self.tile = kind, impl, auto_threshold, tile
        self.mask_same_label, self.global_batch = mask_same_label, global_batch
        self.uses_bias = kind == "siglip"
        if same_label == "positive" and (kind != "siglip" or impl == "tiled"):
            raise ValueError(
                f"loss.same_label: positive is only implemented for the siglip loss with impl "
                f"naive or auto (got loss {kind}, impl {impl}); use same_label: ignore"
            )
        self.same_label = same_label

    def forward(self, image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor,
                logit_bias: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        args = [logit_scale]
        if self.uses_bias:
            if logit_bias is None:
                raise ValueError(
                    "the siglip loss needs a logit bias: set model.init_logit_bias "
                    "(e.g. -10.0)"
                )
            args.append(logit_bias)
        labels = labels if self.mask_same_label else None
        dist = D.is_dist() and self.global_batch != "off"
        if dist and self._replicate(image_emb, text_emb):  # the global batch on every rank, then as one process
            image_emb, text_emb, labels = replicate_rows(image_emb, text_emb, labels)
            dist = False
        tiled = self.impl == "tiled" or (
            self.impl == "auto" and image_emb.shape[0] >= self.auto_threshold
        )
        positive = self.same_label == "positive" and labels is not None
        if positive and (dist or tiled):
            raise ValueError(
                "loss.same_label: positive needs the full-logits SigLIP on one process (the tiled "
                "and distributed kernels only drop pairs); use same_label: ignore, "
                "global_batch: replicate or off, or impl: naive"
            )
        if dist:
            mode = "gather" if self.global_batch == "auto" else self.global_batch
            fn = getattr(D, f"{mode}_{self.kind}")
            return fn(image_emb, text_emb, *args, labels=labels, tile=self.tile)
        if tiled:
            fn = tiled_info_nce if self.kind == "info_nce" else tiled_siglip
            return fn(image_emb, text_emb, *args, labels=labels, tile=self.tile)
        mask = same_label_mask(labels) if labels is not None else None
        if positive:  # SigLIP with class-level positives: same-label pairs get the label +1
            return siglip(image_emb, text_emb, *args, positive=mask)
        fn = info_nce if self.kind == "info_nce" else siglip
        return fn(image_emb, text_emb, *args, mask=mask)

    def _replicate(self, image_emb: Tensor, text_emb: Tensor) -> bool:
        if self.global_batch != "auto":
            return self.global_batch == "replicate"
        n, d = image_emb.shape
        return image_emb.dtype == text_emb.dtype and should_replicate(n * D.world_info()[1], d)


def _kwargs(cfg: TiledLossConfig) -> dict:
    return cfg.model_dump(exclude={"name", "temperature"})


@register("loss", "info_nce", schema=TiledLossConfig)
def build_info_nce(cfg: TiledLossConfig) -> nn.Module:
    """Symmetric InfoNCE (CLIP); impl naive | tiled (exact, no B x B) | auto; global-batch negatives."""
    return TiledContrastive("info_nce", **_kwargs(cfg))


@register("loss", "siglip", schema=TiledLossConfig)
def build_siglip(cfg: TiledLossConfig) -> nn.Module:
    """Sigmoid pairwise loss (SigLIP); impl naive | tiled | auto; global-batch negatives."""
    return TiledContrastive("siglip", **_kwargs(cfg))
