"""Fine-grained alignment losses (functional): FILIP token-wise logits and the multi-granularity
objective (global + region + token terms). Conventions as in ``align/losses.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from modalab.align.losses import NEG_INF, _ce_rows, _exclusion, info_nce
from modalab.constants import acc_dtype


def filip_logits(
    image_tokens: Tensor,
    text_tokens: Tensor,
    image_token_mask: Tensor | None = None,
    text_token_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """FILIP token-wise late interaction similarities (unscaled).

    ``i2t[b, c]``: mean over image b's valid tokens of the max similarity to text c's valid tokens;
    ``t2i[c, b]``: mean over text c's valid tokens of the max over image b's valid tokens.
    Memory is O(B * C * Ni * Nt).

    Args:
        image_tokens: (B, Ni, D); text_tokens: (C, Nt, D) (normalised per token);
        image_token_mask: (B, Ni) bool, True = real token; text_token_mask: (C, Nt) bool.
    Returns:
        i2t (B, C) and t2i (C, B) in the accumulation dtype.
    """
    if image_tokens.dim() != 3 or text_tokens.dim() != 3 or image_tokens.shape[2] != text_tokens.shape[2]:
        raise ValueError(
            f"filip_logits expects (B, Ni, D) and (C, Nt, D) tokens, got "
            f"{tuple(image_tokens.shape)} and {tuple(text_tokens.shape)}"
        )
    dt = acc_dtype(image_tokens, text_tokens)
    bi, ni, _ = image_tokens.shape
    bt, nt, _ = text_tokens.shape
    dev = image_tokens.device
    im = torch.ones(bi, ni, dtype=torch.bool, device=dev) if image_token_mask is None else image_token_mask
    tm = torch.ones(bt, nt, dtype=torch.bool, device=dev) if text_token_mask is None else text_token_mask
    if not (im.any(dim=1).all() and tm.any(dim=1).all()):
        raise ValueError("filip_logits: every image and every text needs at least one valid token")
    sim = torch.einsum("bkd,crd->bckr", image_tokens.to(dt), text_tokens.to(dt))  # (B, C, Ni, Nt)
    best_t = sim.masked_fill(~tm[None, :, None, :], NEG_INF).amax(dim=3)  # (B, C, Ni)
    i2t = best_t.masked_fill(~im[:, None, :], 0.0).sum(dim=2) / im.sum(dim=1)[:, None]
    best_i = sim.masked_fill(~im[:, None, :, None], NEG_INF).amax(dim=2)  # (B, C, Nt)
    t2i = best_i.masked_fill(~tm[None, :, :], 0.0).sum(dim=2) / tm.sum(dim=1)[None, :]
    return i2t, t2i.T


def multi_granularity_terms(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor | float,
    *,
    mask: Tensor | None = None,
    region_emb: Tensor | None = None,
    phrase_emb: Tensor | None = None,
    region_index: Tensor | None = None,
    phrase_index: Tensor | None = None,
    image_tokens: Tensor | None = None,
    text_tokens: Tensor | None = None,
    image_token_mask: Tensor | None = None,
    text_token_mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """The levels of :func:`multi_granularity_loss`, each a scalar (absent levels are left out).

    - ``global``: info_nce over (B, D) image/caption embeddings with ``mask``;
    - ``regional``: info_nce over the M pairs ``(region_emb[region_index[m]],
      phrase_emb[phrase_index[m]])``; two pairs sharing a region or a phrase are false negatives;
    - ``token``: FILIP late interaction over (B, Ni, D) / (B, Nt, D) tokens, with ``mask``.
    """
    terms = {"global": info_nce(image_emb, text_emb, logit_scale, mask=mask)}
    if region_emb is not None:
        if phrase_emb is None or region_index is None or phrase_index is None:
            raise ValueError(
                "multi_granularity: the regional level needs region_emb, phrase_emb, "
                "region_index and phrase_index together"
            )
        if region_index.shape != phrase_index.shape or region_index.dim() != 1:
            raise ValueError(
                f"multi_granularity: region_index and phrase_index must be (M,) index lists, got "
                f"{tuple(region_index.shape)} and {tuple(phrase_index.shape)}"
            )
        ri, pi = region_index.long(), phrase_index.long()
        shared = (ri[:, None] == ri[None, :]) | (pi[:, None] == pi[None, :])  # (M, M)
        terms["regional"] = info_nce(region_emb[ri], phrase_emb[pi], logit_scale, mask=shared)
    if image_tokens is not None:
        if text_tokens is None:
            raise ValueError("multi_granularity: the token level needs image_tokens and text_tokens")
        i2t, t2i = filip_logits(image_tokens, text_tokens, image_token_mask, text_token_mask)
        b = i2t.shape[0]
        excl = _exclusion("multi_granularity", mask, b, i2t.device)
        excl_t = excl.T if excl is not None else None
        terms["token"] = 0.5 * (
            _ce_rows(logit_scale * i2t, excl).mean() + _ce_rows(logit_scale * t2i, excl_t).mean()
        )
    return terms


def multi_granularity_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor | float,
    *,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    **levels: Tensor | None,
) -> Tensor:
    """Weighted sum of global, regional and token-level (FILIP) contrastive terms.

    ``weights`` = (global, regional, token); levels whose inputs are absent are skipped. Keyword
    ``levels`` are those of :func:`multi_granularity_terms` (mask, region_emb, phrase_emb,
    region_index, phrase_index, image_tokens, text_tokens, image_token_mask, text_token_mask).

    Returns:
        scalar loss in the accumulation dtype.
    """
    terms = multi_granularity_terms(image_emb, text_emb, logit_scale, **levels)
    w = dict(zip(("global", "regional", "token"), weights))
    return sum(w[name] * value for name, value in terms.items())
