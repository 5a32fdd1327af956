"""Symmetric InfoNCE from a precomputed (B, B) logit matrix.

For models whose similarity is not a dot product of two independent embeddings (a text-conditioned
video pool scores every caption-video pair with its own video vector), the CLIP loss is the same
cross-entropy over rows and columns of the logit matrix; with ``logits = scale * v @ t.T`` it equals
``align.losses.info_nce(v, t, scale)`` exactly (tested).
"""

from __future__ import annotations

from torch import Tensor

from modalab.align.losses import _ce_rows, _exclusion, _symmetric


def info_nce_logits(logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of row-wise and column-wise cross-entropy with the diagonal as positives.

    Args:
        logits: (B, B), row i = query i (video) against all captions, already scaled.
        mask: optional (B, B) bool, True = false negative (dropped), diagonal ignored.
    Returns:
        scalar loss.
    """
    if logits.dim() != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"info_nce_logits expects a square (B, B) matrix, got {tuple(logits.shape)}")
    excl = _exclusion("info_nce_logits", mask, logits.shape[0], logits.device)
    return _symmetric(_ce_rows, logits, excl)
