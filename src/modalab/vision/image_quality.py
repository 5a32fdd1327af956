"""Pixel-space image quality: PSNR and SSIM (Wang et al. 2004), differentiable, any batch shape.

They live in ``vision/`` because the VQGAN objective (``vision/vqgan.py``) trains on SSIM; the
evaluation metrics of ``eval/reconstruction.py`` use the same functions.
"""

from __future__ import annotations


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
