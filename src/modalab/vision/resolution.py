"""Resize policies for images of any size (chapter 5.2.3-5.2.4).

- :func:`resize_fixed`: one fixed size, by ``stretch``, ``crop`` (cover then centre-crop) or ``pad``
  (fit inside then centre-pad);
- :func:`resize_to_multiple`: keep the aspect ratio, cap the longer side, pad to a multiple of the patch;
- :func:`smart_resize` / :func:`smart_resize_image`: Qwen2-VL's dynamic resolution (sides are
  multiples of ``factor``, area within [min_pixels, max_pixels]);
- :func:`pix2struct_grid` / :func:`pix2struct_patches`: Pix2Struct's variable-resolution patching
  with 1-based row/column ids, zero padding to ``max_patches`` and an attention mask.

Images are float tensors (C, H, W) or PIL images (converted to (C, H, W) floats in [0, 1]).
Resizing uses ``F.interpolate`` (bilinear, antialiased when shrinking). Patches are flattened in
(p, p, C) order, as Pix2Struct does; :func:`patchify` is the one place that defines the layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

MAX_ASPECT = 200  # Qwen2-VL rejects images whose aspect ratio is above this


def as_tensor(image) -> Tensor:
    """A (C, H, W) float tensor from a tensor (returned as is) or a PIL image (scaled to [0, 1])."""
    if isinstance(image, Tensor):
        if image.dim() != 3:
            raise ValueError(f"expected an image tensor of shape (C, H, W), got {tuple(image.shape)}")
        return image if image.is_floating_point() else image.float()
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - pillow is a dependency
        raise TypeError("PIL images need pillow installed") from e
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"expected a torch.Tensor (C, H, W) or a PIL.Image, got {type(image).__name__}"
        )
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]  # (H, W, 1)
    scale = 65535.0 if image.mode.startswith("I;16") else 255.0
    return torch.from_numpy(arr / scale).permute(2, 0, 1).contiguous()  # (C, H, W)


def resize(image, height: int, width: int) -> Tensor:
    """Bilinear resize of a (C, H, W) image to (C, height, width); antialiased when shrinking."""
    x = as_tensor(image)
    if height < 1 or width < 1:
        raise ValueError(f"target size must be positive, got ({height}, {width})")
    if tuple(x.shape[-2:]) == (height, width):
        return x
    shrink = height < x.shape[-2] or width < x.shape[-1]
    out = F.interpolate(
        x[None].float(), size=(height, width), mode="bilinear", align_corners=False, antialias=shrink
    )  # (1, C, height, width)
    return out[0].to(x.dtype)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def pad_to(image: Tensor, height: int, width: int, fill: float = 0.0, center: bool = True) -> Tensor:
    """Pad (C, H, W) to (C, height, width) with ``fill`` (centred, or at the bottom/right)."""
    c, h, w = image.shape
    if h > height or w > width:
        raise ValueError(f"cannot pad an image of size ({h}, {w}) to the smaller ({height}, {width})")
    top = (height - h) // 2 if center else 0
    left = (width - w) // 2 if center else 0
    out = image.new_full((c, height, width), fill)
    out[:, top : top + h, left : left + w] = image
    return out


def resize_fixed(
    image,
    size: int | tuple[int, int],
    mode: Literal["stretch", "crop", "pad"] = "crop",
    fill: float = 0.0,
) -> Tensor:
    """Resize to a fixed (height, width).

    ``stretch`` ignores the aspect ratio; ``crop`` scales to cover the target and centre-crops;
    ``pad`` scales to fit inside the target and centre-pads with ``fill``.
    """
    x = as_tensor(image)
    th, tw = _pair(size)
    h, w = x.shape[-2:]
    if mode == "stretch":
        return resize(x, th, tw)
    if mode == "crop":
        s = max(th / h, tw / w)
        nh, nw = max(th, round(h * s)), max(tw, round(w * s))
        x = resize(x, nh, nw)
        top, left = (nh - th) // 2, (nw - tw) // 2
        return x[:, top : top + th, left : left + tw]
    if mode == "pad":
        s = min(th / h, tw / w)
        nh, nw = min(th, max(1, round(h * s))), min(tw, max(1, round(w * s)))
        return pad_to(resize(x, nh, nw), th, tw, fill)
    raise ValueError(f"resize_fixed: unknown mode '{mode}'; expected 'stretch', 'crop' or 'pad'")


def resize_to_multiple(
    image, multiple: int, max_side: int | None = None, fill: float = 0.0
) -> tuple[Tensor, tuple[int, int]]:
    """Keep the aspect ratio, shrink so the longer side is at most ``max_side``, then pad the
    bottom/right to multiples of ``multiple``.

    Returns the padded image (C, H', W') and the (height, width) of the real content inside it.
    """
    x = as_tensor(image)
    h, w = x.shape[-2:]
    if max_side is not None and max(h, w) > max_side:
        s = max_side / max(h, w)
        h, w = max(1, round(h * s)), max(1, round(w * s))
        x = resize(x, h, w)
    ph, pw = math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple
    return pad_to(x, ph, pw, fill, center=False), (h, w)


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 1280,
) -> tuple[int, int]:
    """Qwen2-VL's target size: both sides multiples of ``factor``, area in [min_pixels, max_pixels],
    aspect ratio kept as closely as possible.

    Round each side to the nearest multiple of ``factor``; if the area is above ``max_pixels``,
    scale by beta = sqrt(hw / max_pixels) and floor to the factor (at least one factor); if it is
    below ``min_pixels``, scale by beta = sqrt(min_pixels / hw) and ceil to the factor.
    """
    if height < 1 or width < 1:
        raise ValueError(f"smart_resize: height and width must be >= 1, got ({height}, {width})")
    if factor < 1 or min_pixels < 1 or max_pixels < min_pixels:
        raise ValueError(
            f"smart_resize: need factor >= 1 and 1 <= min_pixels <= max_pixels, got factor={factor}, "
            f"min_pixels={min_pixels}, max_pixels={max_pixels}"
        )
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise ValueError(
            f"smart_resize: aspect ratio {max(height, width) / min(height, width):.1f} of "
            f"({height}, {width}) is above {MAX_ASPECT}; crop or split the image first"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def smart_resize_image(
    image, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280
) -> Tensor:
    """Resize a (C, H, W) image to :func:`smart_resize` of its size."""
    x = as_tensor(image)
    h, w = smart_resize(x.shape[-2], x.shape[-1], factor, min_pixels, max_pixels)
    return resize(x, h, w)


def pix2struct_grid(height: int, width: int, max_patches: int, patch: int = 16) -> tuple[int, int]:
    """Pix2Struct's (rows, cols): the largest aspect-preserving grid with rows*cols <= max_patches.

    scale = sqrt(max_patches * (patch / height) * (patch / width));
    rows = clamp(floor(scale * height / patch), 1, max_patches), likewise cols.
    """
    if height < 1 or width < 1 or max_patches < 1 or patch < 1:
        raise ValueError(
            f"pix2struct_grid: height, width, max_patches and patch must be >= 1, got "
            f"height={height}, width={width}, max_patches={max_patches}, patch={patch}"
        )
    scale = math.sqrt(max_patches * (patch / height) * (patch / width))
    rows = max(min(math.floor(scale * height / patch), max_patches), 1)
    cols = max(min(math.floor(scale * width / patch), max_patches), 1)
    return rows, cols


def patchify(image: Tensor, patch: int) -> tuple[Tensor, tuple[int, int]]:
    """Cut (C, H, W) into non-overlapping p x p patches flattened in (p, p, C) order, row-major.

    Returns patches (rows*cols, p*p*C) and the grid (rows, cols). H and W must be multiples of p.
    """
    c, h, w = image.shape
    if h % patch or w % patch:
        raise ValueError(f"patchify: image size ({h}, {w}) is not a multiple of the patch size {patch}")
    rows, cols = h // patch, w // patch
    x = image.reshape(c, rows, patch, cols, patch)  # (C, R, p, Q, p)
    x = x.permute(1, 3, 2, 4, 0)  # (R, Q, p, p, C)
    return x.reshape(rows * cols, patch * patch * c), (rows, cols)  # (R*Q, p*p*C)


@dataclass
class Pix2StructPatches:
    """Patches of one image padded to ``max_patches``.

    patches (max_patches, p*p*C), zero at padding; row_ids / col_ids (max_patches,) int64, 1-based,
    0 at padding; attention_mask (max_patches,) bool, True at real patches; grid (rows, cols).
    """

    patches: Tensor
    row_ids: Tensor
    col_ids: Tensor
    attention_mask: Tensor
    grid: tuple[int, int]

    def flat(self) -> Tensor:
        """Pix2Struct's layout: (max_patches, 2 + p*p*C) = [row id, col id, patch values]."""
        ids = torch.stack([self.row_ids, self.col_ids], dim=1).to(self.patches.dtype)  # (M, 2)
        return torch.cat([ids, self.patches], dim=1)


def pix2struct_patches(image, max_patches: int, patch: int = 16) -> Pix2StructPatches:
    """Resize (C, H, W) to the :func:`pix2struct_grid` of its size (bilinear, antialiased) and cut
    it into at most ``max_patches`` patches, zero-padded, with 1-based row/column ids."""
    x = as_tensor(image)
    rows, cols = pix2struct_grid(x.shape[-2], x.shape[-1], max_patches, patch)
    x = F.interpolate(
        x[None].float(), (rows * patch, cols * patch), mode="bilinear", align_corners=False, antialias=True
    )[0]  # (C, rows*p, cols*p)
    flat, _ = patchify(x, patch)  # (n, p*p*C)
    n = rows * cols
    r = torch.arange(rows).repeat_interleave(cols) + 1  # (n,)
    c = torch.arange(cols).repeat(rows) + 1  # (n,)
    pad = max_patches - n
    return Pix2StructPatches(
        patches=F.pad(flat, (0, 0, 0, pad)),
        row_ids=F.pad(r, (0, pad)),
        col_ids=F.pad(c, (0, pad)),
        attention_mask=torch.arange(max_patches) < n,
        grid=(rows, cols),
    )
