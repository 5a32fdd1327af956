"""Image transforms on tensors and PIL images (no torchvision).

Images flow as float tensors (C, H, W) in [0, 1] until ``normalize`` maps them to roughly [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

MEAN, STD = 0.5, 0.5


def pil_to_tensor(img: Image.Image, channels: int) -> Tensor:
    """PIL image -> (C, H, W) float in [0, 1], converted to 1 (L) or 3 (RGB) channels."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = img.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[None]  # (1, H, W)
    else:
        arr = arr.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    return torch.from_numpy(np.ascontiguousarray(arr))


def resize_center_crop(x: Tensor, size: int) -> Tensor:
    """Resize the shorter side to ``size`` (bicubic, antialiased) and centre-crop to a square.

    (C, H, W) -> (C, size, size), values clamped to [0, 1].
    """
    c, h, w = x.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(
            x[None], size=(nh, nw), mode="bicubic", antialias=True, align_corners=False
        )[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, top : top + size, left : left + size].clamp(0.0, 1.0)


def normalize(x: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1]."""
    return (x - MEAN) / STD


def random_shift(x: Tensor, max_shift: int) -> Tensor:
    """Translate (C, H, W) by up to ``max_shift`` pixels each way, filling with the border value.

    Uses torch's global RNG (seeded by the run), so runs are reproducible.
    """
    if max_shift <= 0:
        return x
    dy, dx = (torch.randint(-max_shift, max_shift + 1, (2,))).tolist()
    pad = (max_shift, max_shift, max_shift, max_shift)
    padded = F.pad(x[None], pad, mode="replicate")[0]  # (C, H + 2s, W + 2s)
    h, w = x.shape[-2:]
    top, left = max_shift + dy, max_shift + dx
    return padded[:, top : top + h, left : left + w]
