"""One place where the dataset readers turn stored image bytes into tensors.

Every reader in this package (WebDataset tars, COCO / Flickr folders, parquet / Arrow tables, IDX
arrays) decodes through :func:`open_image`, which hands files and bytes to
:func:`modalab.data.safe_image.open_image` (size limits checked from the header, every failure a
:class:`~modalab.data.dataset.DataError` naming ``file:record``); ``max_pixels`` / ``max_aspect``
come from the source's ``data.max_image_pixels`` / ``data.max_aspect_ratio``.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch import Tensor

from modalab.data.dataset import DataError
from modalab.data.safe_image import MAX_ASPECT, MAX_PIXELS
from modalab.data.safe_image import open_image as _safe_open
from modalab.data.transforms import normalize, pil_to_tensor, resize_center_crop


def open_image(data: bytes | Path | Image.Image, where: str, max_pixels: int = MAX_PIXELS,
               max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Decode ``data`` (bytes or a file path; an already decoded image passes through) fully; a bad
    image raises naming ``where``."""
    if isinstance(data, Image.Image):
        return data
    return _safe_open(bytes(data) if isinstance(data, bytearray) else data, where, max_pixels, max_aspect)


def check_image(data: bytes | Path | Image.Image, where: str, max_pixels: int = MAX_PIXELS,
                max_aspect: float = MAX_ASPECT) -> str | None:
    """None if the image decodes within the limits, else the message :func:`open_image` would raise."""
    try:
        open_image(data, where, max_pixels, max_aspect)
    except DataError as e:
        return str(e)
    return None


def image_tensor(data: bytes | Path | Image.Image, where: str, size: int, channels: int,
                 max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT) -> Tensor:
    """Bytes or path -> (channels, size, size) normalised float tensor (shorter side resized
    bicubic, centre-cropped)."""
    x = pil_to_tensor(open_image(data, where, max_pixels, max_aspect), channels)  # (C, H, W) in [0, 1]
    return normalize(resize_center_crop(x, size))
