"""PSNR, SSIM (vs a direct numpy loop), codebook usage and perplexity on hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from modalab.eval.reconstruction import (
    codebook_usage,
    perplexity,
    psnr,
    reconstruction_metrics,
    ssim,
    tokens_per_image,
)



def ssim_numpy(x: np.ndarray, y: np.ndarray, data_range=1.0, win=11, sigma=1.5) -> float:
    """Direct SSIM of two 2-D images: gaussian-weighted stats at every fully covered position."""
    r = np.arange(win) - (win - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(x.shape[0] - win + 1):
        for j in range(x.shape[1] - win + 1):
            a, b = x[i : i + win, j : j + win], y[i : i + win, j : j + win]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_psnr_known_values():
    x = torch.zeros(2, 1, 4, 4)
    y = torch.full((2, 1, 4, 4), 0.1)
    y[1] = 0.01
    out = psnr(x, y).double()
    assert torch.allclose(out, torch.tensor([20.0, 40.0], dtype=torch.float64), atol=1e-4)
    assert math.isclose(float(psnr(x, y * 2.55, data_range=255.0)[0]), 20 + 20 * math.log10(100),
                        rel_tol=1e-5)  # data range enters as R^2
    assert torch.isinf(psnr(x, x)).all()


def test_ssim_identical_is_one_and_constant_images_by_hand():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    a = torch.full((1, 1, 12, 12), 0.2, dtype=torch.float64)
    b = torch.full((1, 1, 12, 12), 0.6, dtype=torch.float64)
    c1 = 0.01**2  # variances are zero: SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert math.isclose(float(ssim(a, b)), expected, rel_tol=1e-12)


def test_ssim_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.random((2, 2, 16, 14))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    got = ssim(torch.from_numpy(x), torch.from_numpy(y))
    ref = [np.mean([ssim_numpy(x[b, c], y[b, c]) for c in range(2)]) for b in range(2)]
    assert np.allclose(got.numpy(), ref, rtol=1e-10)
    got7 = ssim(torch.from_numpy(x), torch.from_numpy(y), window_size=7, data_range=2.0)
    ref7 = np.mean([ssim_numpy(x[0, c], y[0, c], data_range=2.0, win=7) for c in range(2)])
    assert math.isclose(float(got7[0]), ref7, rel_tol=1e-10)


def test_ssim_gradient_matches_finite_differences():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 11, 12, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 1, 11, 12, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ssim(t, y), (x,), fast_mode=True)


def test_ssim_errors_name_the_problem():
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="equal shape"):
        ssim(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 15))


def test_usage_and_perplexity_hand_values():
    idx = torch.tensor([[0, 0], [1, 1]])
    assert codebook_usage(idx, 4) == 0.5
    assert math.isclose(perplexity(idx, 4), 2.0)
    idx = torch.tensor([3, 3, 3, 1])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert math.isclose(perplexity(idx, 8), math.exp(h)) and codebook_usage(idx, 8) == 0.25
    assert math.isclose(perplexity(torch.arange(16), 16), 16.0)
    assert perplexity(torch.zeros(10, dtype=torch.long), 16) == 1.0
    with pytest.raises(ValueError, match="codebook has 4 codes"):
        codebook_usage(torch.tensor([0, 4]), 4)


def test_reconstruction_metrics_keys_and_clamping():
    x = torch.rand(3, 1, 16, 16)
    idx = torch.tensor([0, 1, 2, 2]).repeat(3, 1, 1).reshape(3, 2, 2)
    m = reconstruction_metrics(x, x + 2.0 * (x > 2), idx, 8)  # no-op perturbation
    assert set(m) == {"psnr", "ssim", "codebook_usage", "perplexity", "tokens_per_image"}
    assert m["tokens_per_image"] == 4 == tokens_per_image(idx)
    assert m["codebook_usage"] == 3 / 8 and math.isinf(m["psnr"])
    m2 = reconstruction_metrics(x, torch.full_like(x, 5.0), None, None, num_tokens=16)
    assert math.isclose(m2["psnr"], float(psnr(x, torch.ones_like(x)).mean()), rel_tol=1e-6)
    assert math.isnan(m2["perplexity"]) and m2["tokens_per_image"] == 16
