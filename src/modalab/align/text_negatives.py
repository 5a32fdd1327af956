"""Contrastive loss with added hard-negative captions (NegCLIP, Yuksekgonul et al. 2023).

Each image comes with K extra captions that describe it wrongly (a swapped attribute, another
relation; ``data/scene_negatives.py`` makes them by level). As in NegCLIP they are appended to the
batch's text pool: the image->text softmax of every image runs over the B batch captions plus all
B x K negative captions; the text->image direction is the usual B x B one (a negative caption has
no image of its own).

``schedule: curriculum`` orders the K negatives as given (L1, L2, L3 by default) and admits them
one level at a time over training: in the first 1/K of the steps only the first level, then the
first two, ... (cumulative, from easy to hard; the chapter's 5.1.4 curriculum raises the hard
share over training, this staging of its semantic levels is ours).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from modalab.align.losses import _ce_rows, _exclusion, same_label_mask
from modalab.constants import acc_dtype
from modalab.config import LossBase
from modalab.registry import register


def info_nce_text_negatives(image_emb: Tensor, text_emb: Tensor, neg_text_emb: Tensor,
                            logit_scale: Tensor | float, *, mask: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE with extra negative captions in the image->text direction.

    Args:
        image_emb: (B, D); text_emb: (B, D), row i the positive of image i;
        neg_text_emb: (B, K, D) negative captions (K may be 0), pooled over the whole batch;
        logit_scale: 1/tau; mask: optional (B, B) bool, True = false negative among batch captions.
    Returns:
        scalar loss in the accumulation dtype.
    """
    b, d = image_emb.shape
    if text_emb.shape != (b, d) or neg_text_emb.dim() != 3 or neg_text_emb.shape[0] != b \
            or neg_text_emb.shape[2] != d:
        raise ValueError(f"info_nce_text_negatives: expected image/text (B, D) and negatives (B, K, D), got "
                         f"{tuple(image_emb.shape)}, {tuple(text_emb.shape)}, {tuple(neg_text_emb.shape)}")
    dt = acc_dtype(image_emb, text_emb)
    img, txt = image_emb.to(dt), text_emb.to(dt)
    neg = neg_text_emb.to(dt).reshape(-1, d)  # (B*K, D)
    logits = logit_scale * (img @ txt.T)  # (B, B)
    excl = _exclusion("info_nce_text_negatives", mask, b, logits.device)
    t2i = _ce_rows(logits.T, excl.T if excl is not None else None).mean()
    pool = torch.cat([logits, logit_scale * (img @ neg.T)], dim=1)  # (B, B + B*K)
    if excl is not None:
        pool = pool.masked_fill(torch.cat([excl, excl.new_zeros(b, neg.shape[0])], dim=1), float("-inf"))
    i2t = (torch.logsumexp(pool, dim=1) - logits.diagonal()).mean()
    return 0.5 * (i2t + t2i)


class TextNegativesInfoNCE(nn.Module):
    """The registered objective: takes ``neg_text_emb`` (B, K, E) from the task."""

    uses_bias = False

    def __init__(self, schedule: str = "all", mask_same_label: bool = False) -> None:
        super().__init__()
        self.schedule, self.mask_same_label = schedule, mask_same_label
        self.progress = 0.0

    def set_progress(self, progress: float) -> None:
        self.progress = float(progress)

    def used(self, k: int) -> int:
        """How many of the K negative levels are in use at the current progress."""
        if self.schedule == "all" or k == 0:
            return k
        return min(k, int(self.progress * k) + 1)

    def forward(self, image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor,
                logit_bias: Tensor | None = None, labels: Tensor | None = None,
                neg_text_emb: Tensor | None = None) -> Tensor:
        if neg_text_emb is None:
            raise ValueError("loss info_nce_text_negatives needs negative captions: use a source that provides "
                             "them (data.source=digit_scenes)")
        mask = same_label_mask(labels) if (self.mask_same_label and labels is not None) else None
        return info_nce_text_negatives(image_emb, text_emb, neg_text_emb[:, : self.used(neg_text_emb.shape[1])],
                                       logit_scale, mask=mask)


class TextNegativesConfig(LossBase):
    schedule: Literal["all", "curriculum"] = "all"
    mask_same_label: bool = False


@register("loss", "info_nce_text_negatives", schema=TextNegativesConfig)
def build_text_negatives(cfg: TextNegativesConfig) -> nn.Module:
    """NegCLIP: InfoNCE with per-image hard-negative captions added to the text pool (curriculum option)."""
    return TextNegativesInfoNCE(cfg.schedule, cfg.mask_same_label)
