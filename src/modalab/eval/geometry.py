"""Geometry of an embedding space: is alignment healthy?

All functions take (N, D) embeddings (normalised by the caller where the metric assumes it) and
compute in float32 (float64 for float64 inputs), without gradient.

- ``similarity_distribution``: positive vs negative cosine similarities (quantiles, histogram);
- ``effective_rank``: exp of the entropy of the normalised singular values (Roy & Vetterli 2007;
  RankMe, Garrido et al. 2023), uncentred, so constant embeddings give exactly 1;
- ``per_dim_std``: standard deviation of each dimension across samples;
- ``modality_gap``: Euclidean distance between the two modalities' centroids (Liang et al. 2022);
- ``alignment`` / ``uniformity``: Wang & Isola 2020, ``E||x - y||^alpha`` over positive pairs and
  ``log E exp(-t ||x_i - x_j||^2)`` over distinct pairs.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _f(x: Tensor) -> Tensor:
    return x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32)


def _check(name: str, x: Tensor) -> None:
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} expects (N, D) embeddings with N >= 1, got {tuple(x.shape)}")


@torch.no_grad()
def similarity_distribution(
    image_emb: Tensor,
    text_emb: Tensor,
    labels: Tensor | None = None,
    quantiles: Sequence[float] = QUANTILES,
    bins: int = 50,
    max_negatives: int = 100_000,
) -> dict[str, object]:
    """Positive vs negative similarities of paired embeddings.

    Positives are the pairs (i, i); negatives the pairs (i, j != i), or, when ``labels`` are given,
    pairs with different labels (same-label pairs are neither). At most ``max_negatives``
    negatives are kept (an even stride) so that quantiles stay cheap.

    Args:
        image_emb, text_emb: (N, D); labels: optional (N,).
    Returns:
        ``{"pos_q": {q: value}, "neg_q": {...}, "pos_mean", "neg_mean", "margin"
        (pos_mean - neg_mean), "hist": {"edges": [bins + 1], "pos": [bins], "neg": [bins]}}``.
    """
    _check("similarity_distribution", image_emb)
    sim = _f(image_emb) @ _f(text_emb).T  # (N, N)
    n = sim.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    neg_mask = ~eye if labels is None else labels[:, None] != labels[None, :]
    pos, neg = sim[eye], sim[neg_mask]
    if neg.numel() > max_negatives:
        neg = neg[:: -(-neg.numel() // max_negatives)]
    qs = torch.tensor(list(quantiles), dtype=sim.dtype, device=sim.device)

    def quant(v: Tensor) -> dict[str, float]:
        if v.numel() == 0:
            return {f"{q:g}": float("nan") for q in quantiles}
        return {f"{q:g}": float(x) for q, x in zip(quantiles, torch.quantile(v, qs))}

    lo = float(min(pos.min(), neg.min() if neg.numel() else pos.min()))
    hi = float(max(pos.max(), neg.max() if neg.numel() else pos.max()))
    if hi <= lo:
        lo, hi = lo - 1e-3, hi + 1e-3
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    pos_mean = float(pos.mean())
    neg_mean = float(neg.mean()) if neg.numel() else float("nan")
    return {
        "pos_q": quant(pos),
        "neg_q": quant(neg),
        "pos_mean": pos_mean,
        "neg_mean": neg_mean,
        "margin": pos_mean - neg_mean,
        "hist": {
            "edges": edges.tolist(),
            "pos": torch.histc(pos.double(), bins, lo, hi).long().tolist(),
            "neg": torch.histc(neg.double(), bins, lo, hi).long().tolist() if neg.numel() else [0] * bins,
        },
    }


@torch.no_grad()
def effective_rank(x: Tensor, eps: float = 1e-12) -> float:
    """``exp(-sum p_k log p_k)`` with ``p = s / sum(s)`` over the singular values s of (N, D) x.

    In [1, min(N, D)]; 1 for rank-one (e.g. constant) embeddings, min(N, D) for a flat spectrum.
    An all-zero matrix returns 0.
    """
    _check("effective_rank", x)
    s = torch.linalg.svdvals(_f(x))
    total = s.sum()
    if total <= eps:
        return 0.0
    p = s / total
    p = p[p > eps]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def per_dim_std(x: Tensor) -> Tensor:
    """(D,) standard deviation of each dimension across the N rows (population, ddof 0)."""
    _check("per_dim_std", x)
    return _f(x).std(dim=0, unbiased=False)


@torch.no_grad()
def modality_gap(image_emb: Tensor, text_emb: Tensor) -> float:
    """``|| mean(image_emb) - mean(text_emb) ||_2`` (centroids over rows)."""
    _check("modality_gap", image_emb)
    _check("modality_gap", text_emb)
    return float(torch.linalg.vector_norm(_f(image_emb).mean(0) - _f(text_emb).mean(0)))


@torch.no_grad()
def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> float:
    """``mean_i ||x_i - y_i||_2^alpha`` over positive pairs (lower is better aligned)."""
    if x.shape != y.shape:
        raise ValueError(f"alignment expects paired (N, D) tensors, got {tuple(x.shape)} and {tuple(y.shape)}")
    _check("alignment", x)
    return float(torch.linalg.vector_norm(_f(x) - _f(y), dim=1).pow(alpha).mean())


@torch.no_grad()
def uniformity(x: Tensor, t: float = 2.0) -> float:
    """``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` (lower is more uniform; needs N >= 2)."""
    _check("uniformity", x)
    if x.shape[0] < 2:
        raise ValueError("uniformity needs at least 2 embeddings")
    d2 = torch.pdist(_f(x)).pow(2)  # (N (N - 1) / 2,)
    return float(torch.logsumexp(-t * d2, dim=0)) - math.log(d2.numel())
