"""Continuous tokens (issue 21): the identity and the VAE (KL) bottleneck, against plain references;
bits per image; the recipe switch and its error."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from modalab.eval.reconstruction import bits_per_image, evaluate_tokenizer
from modalab.vision.quantizers import ContinuousQuantizer, build_quantizer
from modalab.vision.tokenizer import ImageTokenizer
from modalab.vision.tokenizer_builders import ImageTokenizerConfig, build_image_tokenizer


def test_kl_matches_torch_distributions_in_float64():
    torch.manual_seed(0)
    cq = ContinuousQuantizer(5, kl_weight=0.3).double()
    torch.nn.init.normal_(cq.to_logvar.weight, std=0.5)
    z = torch.randn(2, 3, 3, 5, dtype=torch.float64)
    with torch.no_grad():
        _, idx, aux = cq.eval()(z)
        logvar = cq.to_logvar(z)
    post = torch.distributions.Normal(z, (0.5 * logvar).exp())
    prior = torch.distributions.Normal(torch.zeros_like(z), torch.ones_like(z))
    ref = torch.distributions.kl_divergence(post, prior)  # (2, 3, 3, 5)
    assert idx is None
    assert float(aux["loss"]) == pytest.approx(0.3 * float(ref.mean()), rel=1e-12)
    assert float(aux["kl_bits"]) == pytest.approx(float(ref.sum(-1).mean()) / math.log(2), rel=1e-12)


def test_kl_bottleneck_samples_in_training_and_decodes_the_mean_in_eval():
    torch.manual_seed(0)
    cq = ContinuousQuantizer(4, kl_weight=0.1)  # log sigma^2 starts at -4: sigma = exp(-2)
    z = torch.randn(20000, 4)
    out_eval, _, _ = cq.eval()(z)
    assert torch.equal(out_eval, z)
    out_train, _, _ = cq.train()(z)
    noise = (out_train - z).detach()
    assert float(noise.std()) == pytest.approx(math.exp(-2.0), rel=0.02)
    assert abs(float(noise.mean())) < 3 * math.exp(-2.0) / math.sqrt(noise.numel())
    plain = ContinuousQuantizer(4)
    q, idx, aux = plain(z)
    assert q is z and idx is None and float(aux["loss"]) == 0.0 and "kl_bits" not in aux


@pytest.mark.parametrize("kl_weight", [0.0, 0.01])
def test_gradients_reach_the_encoder_and_the_variance_head(kl_weight):
    torch.manual_seed(0)
    tok = ImageTokenizer(ContinuousQuantizer(4, kl_weight), in_channels=1, channels=8, num_down=1, latent_dim=4)
    x = torch.rand(3, 1, 8, 8)
    recon, idx, aux = tok(x)
    assert recon.shape == x.shape and idx is None
    ((recon - x).abs().mean() + aux["loss"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tok.encoder.parameters())
    if kl_weight:
        assert tok.quantizer.to_logvar.weight.grad.abs().sum() > 0
    assert tok.encode(x.clone()).shape == (3, 4, 4, 4)  # continuous tokens (B, h, w, D)


@pytest.mark.parametrize("kl_weight", [0.0, 0.01])
def test_reconstruction_improves_in_a_few_steps(kl_weight):
    torch.manual_seed(0)
    tok = ImageTokenizer(ContinuousQuantizer(4, kl_weight), in_channels=1, channels=8, num_down=1, latent_dim=4)
    x = torch.rand(16, 1, 8, 8).round()  # fixed batch of binary images
    opt = torch.optim.Adam(tok.parameters(), lr=5e-3)
    losses = []
    for _ in range(20):
        recon, _, aux = tok(x)
        rec = (recon - x).abs().mean()
        losses.append(float(rec.detach()))
        opt.zero_grad()
        (rec + aux["loss"]).backward()
        opt.step()
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


def test_bits_per_image_hand_values_and_eval_keys():
    assert bits_per_image(16, 1024, 16) == 160.0
    assert bits_per_image(16, 1000, 16) == pytest.approx(16 * math.log2(1000))
    assert bits_per_image(16, None, 16) == 16 * 16 * 32  # float32 storage, nominal
    assert bits_per_image(16, None, 16, kl_bits_per_token=2.5) == 40.0
    torch.manual_seed(0)
    x = torch.rand(10, 1, 8, 8)
    fsq = ImageTokenizer(build_quantizer("fsq", 4, 64), in_channels=1, channels=8, num_down=1, latent_dim=4)
    assert evaluate_tokenizer(fsq, x, batch_size=4)["bits_per_image"] == 16 * 6  # [4, 4, 4] = 64 codes
    vae = ImageTokenizer(ContinuousQuantizer(4, 0.1), in_channels=1, channels=8, num_down=1, latent_dim=4).eval()
    got = evaluate_tokenizer(vae, x, batch_size=4)["bits_per_image"]  # batches of 4, 4, 2: weighted
    q = vae.quantizer
    with torch.no_grad():
        z = vae.encoder(x).permute(0, 2, 3, 1)  # (10, 4, 4, 4)
        ref = q.kl_nats(z, q.to_logvar(z)).sum((1, 2, 3)).mean() / math.log(2)
    assert got == pytest.approx(float(ref), rel=1e-5)


def test_recipe_switch_and_kl_on_a_quantizer_is_an_error():
    cfg = ImageTokenizerConfig(name="image_tokenizer", quantizer="continuous", kl_weight=0.01, token_grid=4)
    tok = build_image_tokenizer(cfg, image_size=16, in_channels=1)
    assert isinstance(tok.quantizer, ContinuousQuantizer) and tok.quantizer.kl_weight == 0.01
    with pytest.raises(ValidationError, match="model.kl_weight=0.01 applies to model.quantizer=continuous"):
        ImageTokenizerConfig(name="image_tokenizer", quantizer="vq", kl_weight=0.01)
    with pytest.raises(ValueError, match="kl_weight=-1"):
        ContinuousQuantizer(4, kl_weight=-1)
