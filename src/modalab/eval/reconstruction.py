"""Reconstruction and codebook-health metrics for image tokenizers (chapter 5.2.3).

- ``psnr``: 10 log10(R^2 / MSE) per image, R the data range.
- ``ssim``: Wang et al. 2004 with an 11x11 gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
  population (not sample) covariances, averaged over the positions where the window fits inside
  the image and over channels. This equals skimage's ``structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=R)``: skimage filters
  the padded image and then crops (win_size - 1) / 2 pixels from every border, which leaves exactly
  the positions whose window lies inside the image. Differentiable, so usable as a loss.
- ``codebook_usage``: share of the K codes that occur at least once.
- ``perplexity``: exp of the entropy of the code frequencies (K for uniform use, 1 for collapse).
- ``tokens_per_image``: positions per image in an index tensor (B, h, w).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from modalab.vision.image_quality import psnr, ssim  # noqa: F401 (public here too)


def code_counts(indices: Tensor, codebook_size: int) -> Tensor:
    """How often each of the ``codebook_size`` codes occurs in ``indices`` (any shape) -> (K,)."""
    flat = indices.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= codebook_size):
        raise ValueError(
            f"code_counts: indices span [{int(flat.min())}, {int(flat.max())}] but the codebook "
            f"has {codebook_size} codes (valid: 0..{codebook_size - 1})"
        )
    return torch.bincount(flat, minlength=codebook_size)


def codebook_usage(indices: Tensor, codebook_size: int) -> float:
    """Share of the codebook used at least once in ``indices``."""
    return float((code_counts(indices, codebook_size) > 0).sum()) / codebook_size


def perplexity(indices: Tensor, codebook_size: int) -> float:
    """exp(-sum p log p) over the code frequencies in ``indices`` (natural log)."""
    counts = code_counts(indices, codebook_size).double()
    p = counts[counts > 0] / counts.sum()
    return math.exp(float(-(p * p.log()).sum()))


def tokens_per_image(indices: Tensor) -> int:
    """Token positions per image for indices (B, h, w) or (B, T)."""
    return int(indices[0].numel())


def reconstruction_metrics(
    images: Tensor,
    recons: Tensor,
    indices: Tensor | None,
    codebook_size: int | None,
    data_range: float = 1.0,
    num_tokens: int | None = None,
    ssim_window: int = 11,
) -> dict[str, float]:
    """All tokenizer metrics over an evaluation set.

    Args:
        images, recons: (B, C, H, W) in [0, data_range]; recons are clamped to that range.
        indices: (B, h, w) codes of the images, or None for continuous tokens.
        codebook_size: K, or None for continuous tokens (usage / perplexity become NaN).
    Returns:
        ``psnr`` and ``ssim`` (means over images), ``codebook_usage``, ``perplexity``,
        ``tokens_per_image`` (``num_tokens`` when given, else counted from ``indices``).
    """
    recons = recons.clamp(0, data_range)
    out = {
        "psnr": float(psnr(images, recons, data_range).mean()),
        "ssim": float(ssim(images, recons, data_range, window_size=ssim_window).mean()),
    }
    if indices is not None and codebook_size is not None:
        out["codebook_usage"] = codebook_usage(indices, codebook_size)
        out["perplexity"] = perplexity(indices, codebook_size)
    else:
        out["codebook_usage"] = out["perplexity"] = float("nan")
    if num_tokens is None:
        num_tokens = tokens_per_image(indices) if indices is not None else None
    out["tokens_per_image"] = float("nan") if num_tokens is None else num_tokens
    return out


def bits_per_image(num_tokens: int, codebook_size: int | None, latent_dim: int,
                   kl_bits_per_token: float | None = None) -> float:
    """Information per image: ``num_tokens * log2(K)`` for codes (``num_tokens``: index entries per
    image, so residual levels count; a model with books of different sizes, VQ-VAE-2, counts its
    own bits: ``evaluate_tokenizer`` asks its ``bits_per_image``); for continuous tokens the VAE
    rate ``num_tokens * kl_bits_per_token`` when there is a KL bottleneck, else the float32 storage
    ``num_tokens * latent_dim * 32`` (nominal: an upper bound, not a rate)."""
    if codebook_size is not None:
        return num_tokens * math.log2(codebook_size)
    if kl_bits_per_token is not None:
        return num_tokens * kl_bits_per_token
    return float(num_tokens * latent_dim * 32)


@torch.no_grad()
def evaluate_tokenizer(tok: nn.Module, images: Tensor, batch_size: int = 256) -> dict:
    """Reconstruction metrics of ``tok`` on images (N, C, H, W) in [0, 1], plus ``bits_per_image``.

    SSIM uses the standard 11x11 window, shrunk to the largest odd size that fits smaller images.
    """
    was_training = tok.training
    tok.eval()
    recons, indices, kl_bits = [], [], []
    for i in range(0, len(images), batch_size):
        r, idx, aux = tok(images[i : i + batch_size])
        recons.append(r)
        if idx is not None:
            indices.append(idx)
        if "kl_bits" in aux:  # continuous tokens with a KL bottleneck: bits per token, batch mean
            kl_bits.append(float(aux["kl_bits"]) * len(r))
    tok.train(was_training)
    idx_all = torch.cat(indices) if indices else None
    n_tok = tok.tokens_per_image(images.shape[-2], images.shape[-1])
    side = min(images.shape[-2:])
    window = min(11, side if side % 2 else side - 1)
    out = reconstruction_metrics(images, torch.cat(recons), idx_all, tok.codebook_size,
                                 num_tokens=n_tok, ssim_window=window)
    kl_tok = sum(kl_bits) / len(images) if kl_bits else None
    entries = tokens_per_image(idx_all) if idx_all is not None else n_tok
    if hasattr(tok, "bits_per_image"):  # several books (VQ-VAE-2): the model counts its own bits exactly
        out["bits_per_image"] = float(tok.bits_per_image(images.shape[-2], images.shape[-1]))
    else:
        out["bits_per_image"] = bits_per_image(entries, tok.codebook_size, getattr(tok, "latent_dim", 0), kl_tok)
    return out
