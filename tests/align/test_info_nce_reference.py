"""info_nce / siglip against float64 loop references (values and gradients)."""

import math

import pytest
import torch

from modalab.align.losses import info_nce, siglip


def info_nce_loop(img, txt, scale):
    b = img.shape[0]
    total = 0.0
    for i in range(b):
        row = [scale * sum(img[i][k] * txt[j][k] for k in range(img.shape[1])) for j in range(b)]
        col = [scale * sum(img[j][k] * txt[i][k] for k in range(img.shape[1])) for j in range(b)]
        total = total - (row[i] - torch.logsumexp(torch.stack(row), 0)) / (2 * b)
        total = total - (col[i] - torch.logsumexp(torch.stack(col), 0)) / (2 * b)
    return total


def siglip_loop(img, txt, scale, bias):
    b = img.shape[0]
    total = 0.0
    for i in range(b):
        for j in range(b):
            z = scale * (img[i] * txt[j]).sum() + bias
            y = 1.0 if i == j else -1.0
            total = total + torch.log1p(torch.exp(-y * z))
    return total / b


@pytest.mark.parametrize("b,d", [(1, 3), (5, 4), (9, 8)])
def test_info_nce_matches_loop(b, d):
    g = torch.Generator().manual_seed(b)
    img = torch.nn.functional.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    txt = torch.nn.functional.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    ours = info_nce(img, txt, scale)
    ref = info_nce_loop(img, txt, scale)
    g1 = torch.autograd.grad(ours, (img, txt, scale))
    g2 = torch.autograd.grad(ref, (img, txt, scale))
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    for a, r in zip(g1, g2):
        assert torch.allclose(a, r, rtol=1e-10, atol=1e-12)


def test_info_nce_b1_is_zero_and_float32_close():
    x = torch.randn(1, 4)
    assert info_nce(x, x, 10.0).item() == pytest.approx(0.0, abs=1e-7)
    img, txt = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    l64 = info_nce(img, txt, 3.0).item()
    l32 = info_nce(img.float(), txt.float(), 3.0).item()
    assert math.isclose(l64, l32, rel_tol=1e-5)


def test_siglip_matches_loop():
    g = torch.Generator().manual_seed(3)
    img = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    txt = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-10.0, dtype=torch.float64, requires_grad=True)
    ours, ref = siglip(img, txt, scale, bias), siglip_loop(img, txt, scale, bias)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    for a, r in zip(torch.autograd.grad(ours, (img, txt, scale, bias)),
                    torch.autograd.grad(ref, (img, txt, scale, bias))):
        assert torch.allclose(a, r, rtol=1e-10)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"info_nce expects two \(B, D\) tensors"):
        info_nce(torch.zeros(2, 3), torch.zeros(3, 3), 1.0)
