"""Residual VQ: shapes, round trip through indices, a plain per-level reference, straight-through
gradient, and error that falls with every level."""

import pytest
import torch

from modalab.vision.quantizers import VectorQuantizer, build_quantizer
from modalab.vision.residual_vq import ResidualVQ

torch.set_num_threads(1)


def _fitted(levels: int, seed: int = 0) -> tuple[ResidualVQ, torch.Tensor]:
    torch.manual_seed(seed)
    z = torch.randn(512, 6)
    rvq = build_quantizer("rvq", 6, codebook_size=16, rvq_levels=levels)
    rvq.train()
    rvq(z)  # k-means init of every level on its residual
    return rvq.eval(), z


def test_shapes_and_round_trip_through_indices():
    rvq, z = _fitted(3)
    x = z[:40].reshape(2, 4, 5, 6)  # (B, h, w, D)
    q, idx, aux = rvq(x)
    assert q.shape == x.shape and idx.shape == (2, 4, 5, 3) and idx.dtype == torch.long
    assert torch.allclose(rvq.indices_to_codes(idx), q, atol=1e-6)
    assert set(aux) >= {"loss", "commitment", "codebook", "usage", "perplexity", "residual_norm"}
    assert 0 <= int(idx.min()) and int(idx.max()) < 16


def test_matches_a_plain_nearest_code_loop():
    rvq, z = _fitted(3)
    x = z[:50]
    _, idx, _ = rvq(x)
    residual, total = x.clone(), torch.zeros_like(x)
    for level, q in enumerate(rvq.levels):
        codes = q.embed.double()  # (K, D)
        for n in range(len(x)):
            d = ((residual[n].double()[None] - codes) ** 2).sum(1)
            k = int(d.argmin())
            assert k == int(idx[n, level])
            total[n] += codes[k].float()
        residual = x - total


def test_error_falls_with_levels_and_gradient_passes_straight_through():
    errors = []
    for levels in (1, 2, 4):
        rvq, z = _fitted(levels)
        q, _, aux = rvq(z)
        errors.append(float((q - z).pow(2).mean()))
        assert float(aux["residual_norm"]) == pytest.approx(errors[-1], rel=1e-5)
    assert errors[0] > errors[1] > errors[2]
    rvq, z = _fitted(2)
    x = z[:10].clone().requires_grad_(True)
    w = torch.randn(10, 6)
    q, _, _ = rvq(x)
    (q * w).sum().backward()
    assert torch.allclose(x.grad, w)  # identity, applied once (not once per level)


def test_residual_vq_rejects_mismatched_levels_and_inputs():
    with pytest.raises(ValueError, match="one dim and codebook_size"):
        ResidualVQ([VectorQuantizer(8, 4), VectorQuantizer(16, 4)])
    with pytest.raises(ValueError, match="at least one level"):
        ResidualVQ([])
    rvq = build_quantizer("rvq", 4, codebook_size=8, rvq_levels=2)
    with pytest.raises(ValueError, match="expected 4"):
        rvq(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="expected 2 levels"):
        rvq.indices_to_codes(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="rvq_levels=0"):
        build_quantizer("rvq", 4, rvq_levels=0)
