"""One place where the dataset readers turn stored image bytes into tensors.

Every reader in this package (WebDataset tars, COCO / Flickr folders, parquet / Arrow tables, IDX
arrays) decodes through :func:`open_image`, so a safer opener (pixel limits, format allow-list) is
a change here only. A failure is a :class:`~modalab.data.dataset.DataError` naming where the bytes
came from (``file:record``).
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch import Tensor

from modalab.data.dataset import DataError
from modalab.data.transforms import normalize, pil_to_tensor, resize_center_crop

_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def open_image(data: bytes | Path | Image.Image, where: str) -> Image.Image:
    """Decode ``data`` (bytes or a file path; an already decoded image passes through) fully; a bad
    image raises naming ``where``."""
    if isinstance(data, Image.Image):
        return data
    try:
        im = Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)
        im.load()
    except FileNotFoundError:
        raise DataError(f"{where}: image file not found: {data}") from None
    except _ERRORS as e:
        raise DataError(f"{where}: unreadable image ({type(e).__name__}: {e})") from None
    return im


def check_image(data: bytes | Path | Image.Image, where: str) -> str | None:
    """None if the image decodes, else the message :func:`open_image` would raise."""
    try:
        open_image(data, where)
    except DataError as e:
        return str(e)
    return None


def image_tensor(data: bytes | Path | Image.Image, where: str, size: int, channels: int) -> Tensor:
    """Bytes or path -> (channels, size, size) normalised float tensor (shorter side resized
    bicubic, centre-cropped)."""
    x = pil_to_tensor(open_image(data, where), channels)  # (C, H, W) in [0, 1]
    return normalize(resize_center_crop(x, size))
