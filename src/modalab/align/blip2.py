"""BLIP-2's three stage-1 objectives on Q-Former outputs (Li et al. 2023, section 3.2).

- ITC, image-text contrastive: the similarity of an image and a text is the highest similarity
  between the text's [CLS] feature and any of the image's query features; symmetric InfoNCE.
- ITM, image-text matching: a binary match / no-match classifier on the queries of a
  bi-directional pass; negatives are hard ones mined from the ITC similarities: for each image the
  most similar text that does not match it, and for each text the most similar non-matching image.
  BLIP-2 samples negatives in proportion to the softmaxed similarities; here the most similar one is
  taken (deterministic, and what the test pins).
- ITG, image-grounded text generation: next-token loss of the Q-Former's text branch under the
  multimodal causal mask (the text sees the queries, never the image directly).

``match`` (B, B) says which image-text pairs count as matching: the diagonal, or pairs of the
same class when several captions in a batch describe the same class (so a caption of another
"seven" is never mined as a negative for a seven).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def itc_similarity(query_feats: Tensor, text_feats: Tensor) -> Tensor:
    """query_feats (B_i, Q, E), text_feats (B_t, E), both unit-norm -> (B_i, B_t): max over queries."""
    return torch.einsum("iqe,te->itq", query_feats, text_feats).amax(dim=-1)


def itc_loss(logits: Tensor, match: Tensor) -> Tensor:
    """Symmetric cross-entropy of scaled similarities (B, B) with targets spread evenly over the
    matching pairs of each row / column (the diagonal alone: plain InfoNCE)."""
    m = match.float()
    t_i2t = m / m.sum(dim=1, keepdim=True)  # (B, B)
    t_t2i = (m / m.sum(dim=0, keepdim=True)).T
    i2t = -(t_i2t * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    t2i = -(t_t2i * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (i2t + t2i) / 2


def hard_negatives(sim: Tensor, match: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """ITC similarities (B_i, B_t) -> (text index per image, image index per text, and which rows
    have a non-matching candidate at all): the most similar non-matching partner of each."""
    masked = sim.detach().masked_fill(match, float("-inf"))
    neg_text = masked.argmax(dim=1)  # (B_i,)
    neg_image = masked.argmax(dim=0)  # (B_t,)
    has_text = (~match).any(dim=1)
    has_image = (~match).any(dim=0)
    return neg_text, neg_image, has_text, has_image


def itm_loss(logits: Tensor, is_match: Tensor) -> Tensor:
    """logits (N, 2) [no, yes], is_match (N,) bool -> cross-entropy."""
    return F.cross_entropy(logits.float(), is_match.long())


def itg_loss(logits: Tensor, targets: Tensor, pad_id: int = 0) -> Tensor:
    """logits (B, T, V), targets (B, T) -> next-token cross-entropy, padding ignored."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=pad_id)
