"""Image tokenizer: shapes, encode/decode consistency, gradients, and a tiny training run."""

import pytest
import torch

from modalab.vision.quantizers import FSQ, ContinuousQuantizer, VectorQuantizer
from modalab.vision.tokenizer import ImageTokenizer
from modalab.eval.tokenizer_sweep import digits_images, train_tokenizer
from modalab.vision.quantizers import build_quantizer



def make(kind: str, num_down: int = 2, latent_dim: int = 4) -> ImageTokenizer:
    torch.manual_seed(0)
    q = {"vq": lambda: VectorQuantizer(32, latent_dim, dead_code_threshold=0.5),
         "fsq": lambda: FSQ([4, 4, 3], dim=latent_dim),
         "continuous": lambda: ContinuousQuantizer(latent_dim)}[kind]()
    return ImageTokenizer(q, in_channels=1, channels=8, num_down=num_down, latent_dim=latent_dim)


@pytest.mark.parametrize("num_down,tokens", [(1, 8 * 8), (2, 4 * 4)])
def test_downsampling_factor_sets_token_grid(num_down, tokens):
    tok = make("vq", num_down).eval()
    x = torch.rand(2, 1, 16, 16)
    recon, idx, aux = tok(x)
    side = 16 // 2**num_down
    assert recon.shape == x.shape and idx.shape == (2, side, side)
    assert tok.tokens_per_image(16, 16) == tokens
    assert {"loss", "usage", "perplexity"} <= set(aux)


@pytest.mark.parametrize("kind", ["vq", "fsq", "continuous"])
def test_decode_of_encode_equals_forward(kind):
    tok = make(kind)
    tok.train()
    tok(torch.rand(8, 1, 16, 16))  # k-means init for vq
    tok.eval()
    x = torch.rand(3, 1, 16, 16)
    tokens = tok.encode(x)
    expected_shape = (3, 4, 4) if kind != "continuous" else (3, 4, 4, 4)
    assert tokens.shape == expected_shape
    if kind != "continuous":
        assert tokens.dtype == torch.long
    recon, _, _ = tok(x)
    assert torch.allclose(tok.decode(tokens), recon, atol=1e-6)


@pytest.mark.parametrize("kind", ["vq", "fsq"])
def test_reconstruction_gradient_reaches_encoder(kind):
    tok = make(kind).train()
    x = torch.rand(4, 1, 16, 16)
    recon, _, aux = tok(x)
    ((recon - x).abs().mean() + aux["loss"]).backward()
    first = tok.encoder.net[0].weight.grad
    assert first is not None and first.abs().sum() > 0


def test_bad_shapes_raise_helpful_errors():
    tok = make("vq")
    with pytest.raises(ValueError, match="not divisible by the downsampling factor 4"):
        tok(torch.rand(1, 1, 18, 18))
    with pytest.raises(ValueError, match="quantizer.dim=4 but latent_dim=8"):
        ImageTokenizer(VectorQuantizer(8, 4), latent_dim=8)
    with pytest.raises(ValueError, match="expected 'vq', 'rvq', 'fsq' or 'continuous'"):
        build_quantizer("rq", 4)


def test_digits_images_range_and_size():
    x = digits_images(16)
    assert x.shape == (1797, 1, 16, 16) and float(x.min()) >= 0 and float(x.max()) <= 1


def test_tiny_training_run_reduces_reconstruction_loss():
    losses = []
    metrics = train_tokenizer(quantizer="vq", codebook_size=32, image_size=8, num_down=1,
                              channels=8, latent_dim=4, steps=40, batch_size=32, lr=3e-3,
                              log=lambda step, logs: losses.append(logs["rec"]), log_every=1,
                              num_threads=None)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert {"psnr", "ssim", "codebook_usage", "perplexity", "tokens_per_image"} <= set(metrics)
    assert metrics["tokens_per_image"] == 16 and 0 < metrics["codebook_usage"] <= 1


def test_gan_and_perceptual_terms_switch_on_at_disc_start():
    logs = {}
    metrics = train_tokenizer(quantizer="fsq", codebook_size=64, image_size=8, num_down=1,
                              channels=8, latent_dim=4, steps=6, batch_size=8, use_gan=True,
                              disc_start=3, perceptual_weight=0.5,
                              log=lambda step, l: logs.__setitem__(step, dict(l)), log_every=1)
    assert "g_loss" not in logs[2] and "d_loss" not in logs[2]
    for step in (3, 4, 5):
        assert {"g_loss", "d_weight", "d_loss", "perceptual"} <= set(logs[step])
        assert 0 <= logs[step]["d_weight"] <= 1e4
    assert metrics["codebook_size"] == 64 and metrics["tokens_per_image"] == 16
