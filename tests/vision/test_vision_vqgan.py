"""VQGAN objective: hinge losses, adaptive weight vs manual autograd, GAN switch, perceptual term."""

import math

import pytest
import torch
from torch import nn

from modalab.vision.vqgan import (
    PatchDiscriminator,
    StructuralLoss,
    VQGANLoss,
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
)



def test_hinge_losses_hand_values():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - r) = [0, 0.5, 2]
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + f) = [0, 1, 2]
    assert math.isclose(float(hinge_d_loss(real, fake)), 0.5 * (2.5 / 3 + 3 / 3), rel_tol=1e-6)
    assert math.isclose(float(hinge_g_loss(fake)), 1 / 3, rel_tol=1e-6)


def tiny_setup():
    torch.manual_seed(0)
    body = nn.Conv2d(1, 4, 3, padding=1).double()
    last = nn.Conv2d(4, 1, 3, padding=1).double()
    disc = PatchDiscriminator(1, 8, n_layers=1).double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    target = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    return body, last, disc, x, target


def test_adaptive_weight_matches_manual_autograd():
    body, last, disc, x, target = tiny_setup()
    recon = last(torch.relu(body(x)))
    nll = (recon - target).abs().mean()
    g = -disc(recon).mean()
    w = adaptive_weight(nll, g, last.weight)
    # manual: separate graphs, plain .backward(), gradients read from .grad
    last.zero_grad()
    (last(torch.relu(body(x))) - target).abs().mean().backward()
    g_nll = last.weight.grad.clone()
    last.zero_grad()
    (-disc(last(torch.relu(body(x)))).mean()).backward()
    g_gan = last.weight.grad.clone()
    expected = torch.linalg.vector_norm(g_nll) / (torch.linalg.vector_norm(g_gan) + 1e-4)
    assert torch.allclose(w, expected, rtol=1e-12) and not w.requires_grad


def test_adaptive_weight_clamps_and_is_zero_without_grad():
    last = nn.Linear(3, 1, bias=False).double()
    h = torch.ones(2, 3, dtype=torch.float64)
    out = last(h)
    nll = 1e3 * out.sum()  # grad norm 1e3 * 2 * sqrt(3) over gan grad norm 0 + 1e-4 -> clamp
    gan = 0.0 * out.sum()
    assert float(adaptive_weight(nll, gan, last.weight)) == 1e4
    with torch.no_grad():
        out = last(h)
        assert float(adaptive_weight(out.sum(), out.sum(), last.weight)) == 0.0


def test_generator_loss_composition_and_disc_switch():
    body, last, disc, x, target = tiny_setup()
    obj = VQGANLoss(disc, None, rec_loss="l2", codebook_weight=0.5, disc_weight=0.3, disc_start=5)
    q_loss = torch.tensor(0.2, dtype=torch.float64)
    recon = last(torch.relu(body(x)))
    before, logs = obj.generator_loss(target, recon, q_loss, step=4, last_layer=last.weight)
    rec = (recon - target).pow(2).mean()
    assert torch.allclose(before, rec + 0.5 * q_loss) and "g_loss" not in logs
    assert float(obj.discriminator_loss(target, recon, step=4)[0]) == 0.0
    after, logs = obj.generator_loss(target, recon, q_loss, step=5, last_layer=last.weight)
    g = -disc(recon).mean()
    w = adaptive_weight(rec, g, last.weight)
    assert torch.allclose(after, rec + 0.5 * q_loss + 0.3 * w * g)
    assert math.isclose(logs["d_weight"], float(w), rel_tol=1e-9)
    d_loss, d_logs = obj.discriminator_loss(target, recon, step=5)
    assert torch.allclose(d_loss, hinge_d_loss(disc(target), disc(recon)))
    d_loss.backward()  # recons are detached: only the discriminator receives gradients
    assert body.weight.grad is None and disc.net[0].weight.grad is not None


def test_patch_discriminator_gives_patch_logits():
    disc = PatchDiscriminator(1, 8, n_layers=2)
    assert disc(torch.rand(3, 1, 16, 16)).shape == (3, 1, 2, 2)
    assert disc(torch.rand(3, 1, 32, 32)).shape == (3, 1, 6, 6)


def test_structural_loss_zero_on_identity_and_orders_blur():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    loss = StructuralLoss(num_scales=2, window_size=7)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-12)
    blur = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    slight = 0.8 * x + 0.2 * blur
    assert 0 < float(loss(slight, x)) < float(loss(blur, x))
    y = blur.clone().requires_grad_(True)
    loss(y, x).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_bad_rec_loss_name():
    with pytest.raises(ValueError, match="expected 'l1' or 'l2'"):
        VQGANLoss(None, rec_loss="huber")
