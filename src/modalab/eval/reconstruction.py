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
import torch.nn.functional as F
from torch import Tensor


def _check_pair(x: Tensor, y: Tensor, name: str) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"{name}: expected two (B, C, H, W) tensors of equal shape, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image: x, y (B, C, H, W) -> (B,). Identical -> inf."""
    _check_pair(x, y, "psnr")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)  # (B,)
    return (10 * torch.log10(data_range**2 / mse)).to(x.dtype)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64) -> Tensor:
    """Normalised 1-D gaussian (size,) centred on the middle tap."""
    r = torch.arange(size, dtype=dtype) - (size - 1) / 2
    w = torch.exp(-(r**2) / (2 * sigma**2))
    return w / w.sum()


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Structural similarity per image: x, y (B, C, H, W) -> (B,); mean over valid positions.

    The window must fit: H and W >= ``window_size`` (as in skimage); otherwise a ValueError.
    """
    _check_pair(x, y, "ssim")
    b, c, h, w = x.shape
    if h < window_size or w < window_size:
        raise ValueError(
            f"ssim: image {h}x{w} is smaller than the {window_size}x{window_size} window; "
            f"upsample the images or pass a smaller odd window_size"
        )
    g = gaussian_window(window_size, sigma, dtype=x.dtype).to(x.device)
    kernel = (g[:, None] * g[None, :]).expand(c, 1, window_size, window_size)  # (C, 1, k, k)

    def filt(t: Tensor) -> Tensor:
        return F.conv2d(t, kernel, groups=c)  # (B, C, H - k + 1, W - k + 1)

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).flatten(1).mean(1)  # (B,)


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
