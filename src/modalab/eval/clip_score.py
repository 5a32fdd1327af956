"""Text-image consistency of generated images: CLIP score and R-precision on embeddings.

Both take embeddings from a dual encoder; in modalab that is the in-house ``ScoreEncoder``
(``eval/score_encoder.py``) trained on the real training split of the same domain, so the numbers
are **in-domain scores**: comparable between modalab runs with the same score encoder, never with
published CLIP-ViT numbers.

- CLIP score. modalab reports Hessel et al.'s CLIP-S = w * max(cos(image, text), 0) with w = 2.5
  (range [0, 2.5]), averaged over the (generated image, prompt) pairs. torchmetrics'
  ``CLIPScore`` reports 100 * max(cos, 0) instead, i.e. 40x the number here; pass ``w=100`` to get
  that convention.
- R-precision (Xu et al. 2018, AttnGAN): for each generated image, its prompt is ranked among the
  prompt and R - 1 mismatched captions; the score is the share of images whose own prompt ranks
  first (R = number of candidates).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

HESSEL_W = 2.5
TORCHMETRICS_W = 100.0


def _pairs(fn: str, image_emb: Tensor, text_emb: Tensor) -> None:
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"{fn}: need image and text embeddings of one shape (N, E); got "
                         f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")


def clip_score_per_pair(image_emb: Tensor, text_emb: Tensor, w: float = HESSEL_W) -> Tensor:
    """w * max(cos(image_i, text_i), 0) for each row pair: (N, E), (N, E) -> (N,)."""
    _pairs("clip_score", image_emb, text_emb)
    cos = F.cosine_similarity(image_emb.double(), text_emb.double(), dim=-1)  # (N,)
    return w * cos.clamp_min(0)


def clip_score(image_emb: Tensor, text_emb: Tensor, w: float = HESSEL_W) -> float:
    """Mean CLIP-S over the pairs (Hessel et al. w = 2.5 by default)."""
    return float(clip_score_per_pair(image_emb, text_emb, w).mean())


def r_precision(image_emb: Tensor, text_emb: Tensor, negatives: Tensor) -> float:
    """Share of images whose own text beats every mismatched candidate in cosine.

    Args:
        image_emb: (N, E) generated-image embeddings; text_emb: (N, E) their prompts.
        negatives: (N, R - 1, E) mismatched captions for each image.
    Ties count as misses.
    """
    _pairs("r_precision", image_emb, text_emb)
    if negatives.dim() != 3 or negatives.shape[0] != len(image_emb) or negatives.shape[2] != image_emb.shape[1]:
        raise ValueError(f"r_precision: negatives must be (N={len(image_emb)}, R - 1, E={image_emb.shape[1]}); "
                         f"got {tuple(negatives.shape)}")
    img = F.normalize(image_emb.double(), dim=-1)
    pos = (img * F.normalize(text_emb.double(), dim=-1)).sum(-1)  # (N,)
    neg = torch.einsum("ne,nre->nr", img, F.normalize(negatives.double(), dim=-1))  # (N, R - 1)
    return float((pos[:, None] > neg).all(dim=1).double().mean())


def mismatched_negatives(labels: Tensor, pool_labels: Tensor, count: int, seed: int = 0) -> Tensor:
    """Indices (N, count) into a caption pool, for each item ``count`` captions of another class
    (drawn without replacement per item, seeded)."""
    g, rows = torch.Generator().manual_seed(seed), []
    for y in labels.tolist():
        other = (pool_labels != y).nonzero().flatten()
        if len(other) < count:
            raise ValueError(f"mismatched_negatives: class {y} has only {len(other)} mismatched captions "
                             f"in the pool; need {count}")
        rows.append(other[torch.randperm(len(other), generator=g)[:count]])
    return torch.stack(rows)
