"""Image preprocessing read from a checkpoint's ``preprocessor_config.json``, with Pillow and torch.

:class:`ImagePreprocessor` reproduces transformers' Pillow image processors (CLIP, SigLIP, ViT):
resize (``size.shortest_edge`` keeps the aspect ratio; ``size.height/width`` is exact) with the
configured Pillow filter, centre crop (``crop_size``), rescale (1/255) and normalise (mean/std).

:class:`PixelAdapter` lets a pretrained image tower train on modalab's data sources, whose images
arrive as (B, C, S, S) tensors normalised to [-1, 1]: it maps them back to [0, 1], repeats a grey
channel to RGB, resizes to the tower's size (bicubic, antialiased) and normalises with the
checkpoint's mean/std. Its ``tower`` is the converted model; it holds no weights of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from modalab.models.pretrained.source import PretrainedError, read_json


def _size(value: Any, where: str) -> tuple[str, int | tuple[int, int]]:
    """``("shortest", s)`` or ``("exact", (h, w))`` from a transformers size entry."""
    if isinstance(value, int):
        return "exact", (value, value)
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return "shortest", int(value["shortest_edge"])
        if "height" in value and "width" in value:
            return "exact", (int(value["height"]), int(value["width"]))
    raise PretrainedError(f"{where}: unsupported size {value!r}; expected shortest_edge or height/width")


class ImagePreprocessor:
    """PIL image -> (3, H, W) float32 as the checkpoint's processor makes it."""

    def __init__(self, cfg: dict[str, Any], where: str = "preprocessor_config.json") -> None:
        self.do_resize = bool(cfg.get("do_resize", True))
        self.resize_mode, self.size = _size(cfg.get("size", 224), where)
        self.resample = int(cfg.get("resample", 3))
        self.do_crop = bool(cfg.get("do_center_crop", False))
        self.crop = _size(cfg.get("crop_size", 224), where)[1] if self.do_crop else None
        if self.do_crop and not isinstance(self.crop, tuple):
            raise PretrainedError(f"{where}: crop_size must give height and width")
        self.do_rescale = bool(cfg.get("do_rescale", True))
        self.rescale = float(cfg.get("rescale_factor", 1 / 255))
        self.do_normalize = bool(cfg.get("do_normalize", True))
        self.mean = np.asarray(cfg.get("image_mean", [0.5, 0.5, 0.5]), dtype=np.float32)
        self.std = np.asarray(cfg.get("image_std", [0.5, 0.5, 0.5]), dtype=np.float32)

    @classmethod
    def from_folder(cls, folder: Path) -> "ImagePreprocessor":
        path = Path(folder) / "preprocessor_config.json"
        return cls(read_json(path, "image size, crop and mean/std"), str(path))

    @property
    def output_size(self) -> tuple[int, int]:
        if self.crop is not None:
            return self.crop  # type: ignore[return-value]
        if self.resize_mode == "exact":
            return self.size  # type: ignore[return-value]
        raise PretrainedError("a shortest-edge resize without a centre crop has no fixed output size")

    def _resize_to(self, h: int, w: int) -> tuple[int, int]:
        if self.resize_mode == "exact":
            return self.size  # type: ignore[return-value]
        s = int(self.size)  # type: ignore[arg-type]
        if (h <= w and h == s) or (w <= h and w == s):
            return h, w
        if w < h:
            return int(s * h / w), s
        return s, int(s * w / h)

    def __call__(self, image: Image.Image) -> Tensor:
        img = image.convert("RGB")
        if self.do_resize:
            h, w = self._resize_to(img.height, img.width)
            img = img.resize((w, h), resample=self.resample)
        arr = np.asarray(img).transpose(2, 0, 1)  # (3, H, W) uint8
        if self.crop is not None:
            ch, cw = self.crop  # type: ignore[misc]
            h, w = arr.shape[1:]
            if ch > h or cw > w:
                raise PretrainedError(f"centre crop {self.crop} is larger than the resized image {(h, w)}")
            top, left = (h - ch) // 2, (w - cw) // 2
            arr = arr[:, top : top + ch, left : left + cw]
        x = arr.astype(np.float64) * self.rescale if self.do_rescale else arr.astype(np.float64)
        x = x.astype(np.float32)
        if self.do_normalize:
            x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def batch(self, images: list[Image.Image]) -> Tensor:
        """(B, 3, H, W)."""
        return torch.stack([self(im) for im in images])


class PixelAdapter(nn.Module):
    """modalab images ((B, C, S, S) in [-1, 1]) -> the tower's input -> the tower's output."""

    def __init__(self, tower: nn.Module, size: int, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.tower = tower
        self.size = size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def prepare(self, images: Tensor) -> Tensor:
        """(B, C, S, S) in [-1, 1] -> (B, 3, size, size) normalised like the checkpoint's data."""
        x = images * 0.5 + 0.5  # [0, 1]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey -> RGB
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", antialias=True,
                              align_corners=False).clamp(0.0, 1.0)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, images: Tensor) -> Tensor:
        return self.tower(self.prepare(images))

    def forward_tokens(self, images: Tensor) -> Tensor:
        return self.tower.forward_tokens(self.prepare(images))

    def pool_tokens(self, tokens: Tensor) -> Tensor:
        return self.tower.pool_tokens(tokens)
