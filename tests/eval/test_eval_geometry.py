"""Embedding-geometry metrics against plain float64 loop / numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modalab.eval.geometry import (
    alignment,
    effective_rank,
    modality_gap,
    per_dim_std,
    similarity_distribution,
    uniformity,
)


def emb(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def test_effective_rank_reference_and_extremes():
    x = emb(12, 6, 1)
    s = np.linalg.svd(x.numpy(), compute_uv=False)
    p = s / s.sum()
    assert effective_rank(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-12)
    assert effective_rank(emb(1, 6, 2).expand(10, 6)) == pytest.approx(1.0, abs=1e-9)  # constant
    assert effective_rank(torch.eye(5, dtype=torch.float64)) == pytest.approx(5.0, rel=1e-12)
    assert effective_rank(torch.zeros(4, 3)) == 0.0


def test_per_dim_std_modality_gap_alignment_reference():
    x, y = emb(7, 4, 3), emb(7, 4, 4)
    n, d = x.shape
    for j in range(d):
        col = [x[i, j].item() for i in range(n)]
        mu = sum(col) / n
        assert per_dim_std(x)[j].item() == pytest.approx(math.sqrt(sum((c - mu) ** 2 for c in col) / n), rel=1e-12)
    cx = [sum(x[i, j].item() for i in range(n)) / n for j in range(d)]
    cy = [sum(y[i, j].item() for i in range(n)) / n for j in range(d)]
    assert modality_gap(x, y) == pytest.approx(math.dist(cx, cy), rel=1e-12)
    for alpha in (1.0, 2.0):
        ref = sum(math.dist(x[i].tolist(), y[i].tolist()) ** alpha for i in range(n)) / n
        assert alignment(x, y, alpha) == pytest.approx(ref, rel=1e-12)
    assert alignment(x, x) == 0.0


def test_uniformity_reference():
    x = emb(6, 3, 5)
    vals = [math.exp(-2.0 * math.dist(x[i].tolist(), x[j].tolist()) ** 2) for i in range(6) for j in range(i + 1, 6)]
    assert uniformity(x, t=2.0) == pytest.approx(math.log(sum(vals) / len(vals)), rel=1e-12)
    assert uniformity(emb(1, 3, 6).expand(5, 3)) == pytest.approx(0.0, abs=1e-12)  # all equal: log 1
    assert uniformity(emb(64, 8, 7)) < -1.0  # spread out on the sphere
    with pytest.raises(ValueError, match="at least 2"):
        uniformity(emb(1, 3, 8))


def test_similarity_distribution_quantiles_and_histogram():
    x, y = emb(9, 4, 9), emb(9, 4, 10)
    out = similarity_distribution(x, y, quantiles=(0.1, 0.5, 0.9), bins=7)
    sim = (x @ y.T).numpy()
    pos = np.diag(sim)
    neg = sim[~np.eye(9, dtype=bool)]
    for q in (0.1, 0.5, 0.9):
        assert out["pos_q"][f"{q:g}"] == pytest.approx(np.quantile(pos, q), rel=1e-12)
        assert out["neg_q"][f"{q:g}"] == pytest.approx(np.quantile(neg, q), rel=1e-12)
    assert out["margin"] == pytest.approx(pos.mean() - neg.mean(), rel=1e-12)
    assert sum(out["hist"]["pos"]) == 9 and sum(out["hist"]["neg"]) == 72
    assert len(out["hist"]["edges"]) == 8
    # with labels, same-label off-diagonal pairs are not negatives
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2])
    lab = similarity_distribution(x, y, labels)
    same = (labels[:, None] == labels[None, :]).numpy()
    assert lab["neg_mean"] == pytest.approx(sim[~same].mean(), rel=1e-12)
    assert sum(lab["hist"]["neg"]) == int((~same).sum())
