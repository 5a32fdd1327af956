"""Contrastive alignment losses (functional).

Conventions shared by every loss here:
- embeddings are used as given: the caller L2-normalises them;
- ``logit_scale`` is the multiplier 1/tau, already exponentiated (as open_clip passes it);
- the softmax / log-sum-exp is computed in float32 (or float64 when the inputs are float64),
  whatever the input dtype, so bfloat16 embeddings do not lose the loss;
- ``mask`` is an optional (B, B) bool tensor: ``mask[i, j]`` True means "image i and text j are a
  false negative (same label, identical caption...): drop the pair from the negatives", in both
  directions (row i of image->text and row j of text->image). The diagonal is the positive and is
  never excluded, whatever the mask says. A row whose negatives are all masked keeps only its
  positive: its InfoNCE-type term is ``-log(1) = 0`` (finite value, zero gradient), its SigLIP term
  is the positive pair's term alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from modalab.constants import acc_dtype

NEG_INF = float("-inf")


def _check_pair(fn: str, image_emb: Tensor, text_emb: Tensor) -> None:
    if image_emb.shape != text_emb.shape or image_emb.dim() != 2:
        raise ValueError(
            f"{fn} expects two (B, D) tensors of the same shape, got "
            f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )


def _exclusion(fn: str, mask: Tensor | None, b: int, device: torch.device) -> Tensor | None:
    """(B, B) bool of pairs to drop from the negatives, diagonal cleared; None if nothing to drop."""
    if mask is None:
        return None
    if mask.shape != (b, b) or mask.dtype != torch.bool:
        raise ValueError(
            f"{fn}: mask must be a (B, B) = ({b}, {b}) bool tensor (True = false negative), "
            f"got shape {tuple(mask.shape)} dtype {mask.dtype}"
        )
    eye = torch.eye(b, dtype=torch.bool, device=device)
    return mask.to(device) & ~eye


def same_label_mask(labels: Tensor) -> Tensor:
    """False-negative mask from labels: ``labels[i] == labels[j]`` for i != j.

    Args:
        labels: (B,) integer labels (class ids, or ids of identical captions).
    Returns:
        (B, B) bool, diagonal False.
    """
    if labels.dim() != 1:
        raise ValueError(f"same_label_mask expects (B,) labels, got shape {tuple(labels.shape)}")
    same = labels[:, None] == labels[None, :]  # (B, B)
    return same & ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)


def _logits(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
    dt = acc_dtype(image_emb, text_emb)
    return logit_scale * (image_emb.to(dt) @ text_emb.to(dt).T)  # (B, B)


def _ce_rows(logits: Tensor, excl: Tensor | None) -> Tensor:
    """Per-row ``logsumexp(row) - row[i]`` with excluded entries removed. (B, B) -> (B,)"""
    if excl is not None:
        logits = logits.masked_fill(excl, NEG_INF)
    return torch.logsumexp(logits, dim=1) - logits.diagonal()


def _symmetric(rows_fn, logits: Tensor, excl: Tensor | None) -> Tensor:
    """Mean of the image->text rows and the text->image rows (transposed logits and mask)."""
    excl_t = excl.T if excl is not None else None
    return 0.5 * (rows_fn(logits, excl).mean() + rows_fn(logits.T, excl_t).mean())


def info_nce(
    image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float, *, mask: Tensor | None = None
) -> Tensor:
    """Symmetric InfoNCE (CLIP): mean of image->text and text->image cross-entropy.

    Args:
        image_emb: (B, D) image embeddings (normalised by the caller).
        text_emb: (B, D) text embeddings; row i is the positive of image row i.
        logit_scale: scalar multiplier 1/tau (already exponentiated).
        mask: optional (B, B) bool, True = false negative (see module docstring).
    Returns:
        scalar loss, in the accumulation dtype (float32, or float64 for float64 inputs).
    """
    _check_pair("info_nce", image_emb, text_emb)
    logits = _logits(image_emb, text_emb, logit_scale)  # (B, B)
    excl = _exclusion("info_nce", mask, logits.shape[0], logits.device)
    return _symmetric(_ce_rows, logits, excl)


def siglip(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float,
    *,
    mask: Tensor | None = None,
    positive: Tensor | None = None,
) -> Tensor:
    """Sigmoid loss (SigLIP): ``-logsigmoid(labels * (scale * I @ T.T + bias)).sum() / B``.

    Labels are +1 on the diagonal and -1 elsewhere; masked pairs contribute nothing (the sum is
    still divided by B); pairs marked in ``positive`` (e.g. same-label pairs of class-level
    captions) get the label +1 as well. The normaliser is B whatever the number of positives,
    as in the paper (Zhai et al. 2023, Algorithm 1).

    Args:
        image_emb: (B, D); text_emb: (B, D); logit_scale, logit_bias: scalars;
        mask: optional (B, B) bool, True = false negative (dropped);
        positive: optional (B, B) bool, True = off-diagonal pair that is also a positive; a pair
            cannot be both masked and positive.
    Returns:
        scalar loss in the accumulation dtype.
    """
    _check_pair("siglip", image_emb, text_emb)
    b = image_emb.shape[0]
    logits = _logits(image_emb, text_emb, logit_scale) + logit_bias  # (B, B)
    pos = torch.eye(b, dtype=torch.bool, device=logits.device)
    extra = _exclusion("siglip (positive)", positive, b, logits.device)
    excl = _exclusion("siglip", mask, b, logits.device)
    if extra is not None:
        if excl is not None and (extra & excl).any():
            raise ValueError("siglip: a pair is marked both as masked and as positive; pass one")
        pos = pos | extra
    labels = pos.to(logits.dtype) * 2 - 1  # (B, B) +1 / -1
    terms = -F.logsigmoid(labels * logits)  # (B, B)
    if excl is not None:
        terms = terms.masked_fill(excl, 0.0)
    return terms.sum() / b


def hard_negative_info_nce(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor | float,
    k: int = 10,
    *,
    mask: Tensor | None = None,
    mode: str = "only",
    weight: float = 1.0,
) -> Tensor:
    """InfoNCE with the k hardest negatives of each row (top-k by logit over j != i not masked),
    both directions.

    - ``mode="only"``: the softmax holds the positive and the k hardest negatives alone, row i
      (image->text) is ``-log(e^{l_ii} / (e^{l_ii} + sum_{j in top-k} e^{l_ij}))``. Trained from
      scratch this collapses (kept as a documented negative result).
    - ``mode="added"`` (mined hard negatives added to the in-batch softmax, NegCLIP style): the
      softmax holds the positive and every valid in-batch negative, and the k mined negatives enter
      it a second time with weight ``weight``:
      ``-log(e^{l_ii} / (e^{l_ii} + sum_{j valid} e^{l_ij} + weight * sum_{j in top-k} e^{l_ij}))``.

    Rows with fewer than k valid negatives use all of them. Ties are broken by the lower column
    index (stable sort), so the result is deterministic.

    Args:
        image_emb, text_emb: (B, D); logit_scale: scalar; k: mined negatives per row (>= 1);
        mask: optional (B, B) bool, True = false negative; mode: "only" or "added";
        weight: > 0, extra weight of each mined negative in ``added`` mode.
    Returns:
        scalar loss in the accumulation dtype.
    """
    _check_pair("hard_negative_info_nce", image_emb, text_emb)
    if k < 1:
        raise ValueError(f"hard_negative_info_nce: k must be >= 1, got {k}")
    if mode not in ("only", "added") or weight <= 0:
        raise ValueError(
            f"hard_negative_info_nce: mode must be 'only' or 'added' and weight > 0, got {mode!r}, {weight}"
        )
    logits = _logits(image_emb, text_emb, logit_scale)  # (B, B)
    b = logits.shape[0]
    excl = _exclusion("hard_negative_info_nce", mask, b, logits.device)
    eye = torch.eye(b, dtype=torch.bool, device=logits.device)
    kk = min(k, b - 1)

    def rows(lg: Tensor, ex: Tensor | None) -> Tensor:
        drop = eye if ex is None else (eye | ex)
        neg = lg.masked_fill(drop, NEG_INF)  # (B, B)
        order = torch.sort(neg.detach(), dim=1, descending=True, stable=True).indices[:, :kk]
        hard = neg.gather(1, order)  # (B, kk), -inf where a row ran out of valid negatives
        pos = lg.diagonal()[:, None]  # (B, 1)
        if mode == "added":  # every valid candidate once, the mined ones once more, weighted
            every = lg if ex is None else lg.masked_fill(ex, NEG_INF)  # (B, B), diagonal kept
            terms = torch.cat([every, hard + math.log(weight)], dim=1)  # (B, B + kk)
        else:
            terms = torch.cat([pos, hard], dim=1)  # (B, 1 + kk)
        return torch.logsumexp(terms, dim=1) - pos[:, 0]

    return _symmetric(rows, logits, excl)


def hcl_info_nce(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor | float,
    beta: float = 1.0,
    tau_plus: float = 0.0,
    *,
    mask: Tensor | None = None,
) -> Tensor:
    """Hardness-weighted InfoNCE (HCL, Robinson et al. 2021), both directions.

    With logits ``l_ij = scale * s_ij`` over the N valid negatives of row i, the negative term is
    ``Ng = N * sum_j w_j e^{l_ij}`` with importance weights ``w = softmax(beta * l)`` (beta = 0:
    plain InfoNCE). With ``tau_plus > 0`` (class-prior debiasing) it becomes
    ``max((Ng - tau_plus * N * e^{l_ii}) / (1 - tau_plus), N * e^{-scale})``. The row loss is
    ``log(1 + Ng / e^{l_ii})``, computed in log space. A row without valid negatives gives 0.

    Args:
        image_emb, text_emb: (B, D); logit_scale: scalar; beta >= 0: hardness concentration;
        tau_plus in [0, 1): positive-class prior; mask: optional (B, B) bool false negatives.
    Returns:
        scalar loss in the accumulation dtype.
    """
    _check_pair("hcl_info_nce", image_emb, text_emb)
    if beta < 0 or not 0.0 <= tau_plus < 1.0:
        raise ValueError(f"hcl_info_nce: need beta >= 0 and 0 <= tau_plus < 1, got {beta}, {tau_plus}")
    logits = _logits(image_emb, text_emb, logit_scale)  # (B, B)
    b = logits.shape[0]
    excl = _exclusion("hcl_info_nce", mask, b, logits.device)
    eye = torch.eye(b, dtype=torch.bool, device=logits.device)

    def rows(lg: Tensor, ex: Tensor | None) -> Tensor:
        valid = ~(eye if ex is None else (eye | ex))  # (B, B)
        n = valid.sum(dim=1)  # (B,)
        has = (n > 0)[:, None]
        # rows without negatives get a finite dummy so that no NaN reaches the gradient
        a = torch.where(has, ((beta + 1.0) * lg).masked_fill(~valid, NEG_INF), 0.0)
        c = torch.where(has, (beta * lg).masked_fill(~valid, NEG_INF), 0.0)
        log_n = n.clamp(min=1).to(lg.dtype).log()
        log_ng = log_n + torch.logsumexp(a, dim=1) - torch.logsumexp(c, dim=1)  # (B,)
        pos = lg.diagonal()
        if tau_plus > 0:
            e = math.log(tau_plus) + log_n + pos
            m = torch.maximum(log_ng, e).detach()
            inner = (log_ng - m).exp() - (e - m).exp()
            tiny = torch.finfo(lg.dtype).tiny
            raw = m + inner.clamp(min=tiny).log() - math.log(1.0 - tau_plus)
            log_ng = torch.maximum(raw, log_n - logit_scale)
        loss = torch.logaddexp(torch.zeros_like(pos), log_ng - pos)
        return torch.where(has[:, 0], loss, 0.0)

    return _symmetric(rows, logits, excl)


def label_targets(labels: Tensor) -> Tensor:
    """Soft targets that share each row's mass among all items with the same label.

    Args:
        labels: (B,) integer labels.
    Returns:
        (B, B) float32, ``1 / #{j : labels[j] == labels[i]}`` where labels match, else 0.
    """
    same = (labels[:, None] == labels[None, :]).float()  # (B, B)
    return same / same.sum(dim=1, keepdim=True)


def soft_label_info_nce(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor | float,
    targets: Tensor | None = None,
    *,
    smoothing: float = 0.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Cross-entropy against a soft target distribution, ``-sum_j y_ij log p_ij``, both directions.

    ``targets`` (default: identity) is any non-negative (B, B) matrix; row i of image->text uses
    row i, text->image uses column i. Masked entries are removed from both the softmax and the
    targets, then each row is normalised to sum to 1 and smoothed:
    ``y = (1 - smoothing) * y + smoothing / |V_i|`` over the row's valid entries V_i (the positive
    plus its unmasked negatives). With identity targets, no smoothing and no mask this is info_nce.

    Args:
        image_emb, text_emb: (B, D); logit_scale: scalar; targets: (B, B) or None;
        smoothing in [0, 1); mask: optional (B, B) bool false negatives.
    Returns:
        scalar loss in the accumulation dtype.
    """
    _check_pair("soft_label_info_nce", image_emb, text_emb)
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"soft_label_info_nce: smoothing must be in [0, 1), got {smoothing}")
    logits = _logits(image_emb, text_emb, logit_scale)  # (B, B)
    b = logits.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=logits.device)
    if targets is None:
        targets = eye
    if targets.shape != (b, b):
        raise ValueError(
            f"soft_label_info_nce: targets must be (B, B) = ({b}, {b}), got {tuple(targets.shape)}"
        )
    targets = targets.to(device=logits.device, dtype=logits.dtype)
    if (targets < 0).any():
        raise ValueError("soft_label_info_nce: targets must be non-negative")
    excl = _exclusion("soft_label_info_nce", mask, b, logits.device)
    valid = torch.ones_like(eye) if excl is None else ~excl  # (B, B)

    def direction(lg: Tensor, y: Tensor, ok: Tensor) -> Tensor:
        y = y * ok
        total = y.sum(dim=1, keepdim=True)
        if (total <= 0).any():
            raise ValueError(
                "soft_label_info_nce: a row of targets has no mass left on its unmasked entries"
            )
        y = y / total
        if smoothing > 0:
            okf = ok.to(lg.dtype)
            y = (1.0 - smoothing) * y + smoothing * okf / okf.sum(dim=1, keepdim=True)
        logp = F.log_softmax(lg.masked_fill(~ok, NEG_INF), dim=1).masked_fill(~ok, 0.0)
        return -(y * logp).sum(dim=1).mean()

    return 0.5 * (direction(logits, targets, valid) + direction(logits.T, targets.T, valid.T))
