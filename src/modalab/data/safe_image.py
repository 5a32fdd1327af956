"""The one way modalab decodes an image file: size limits checked from the header first.

A few KB of PNG can declare 5,000,000 x 1 or 20,000 x 20,000 pixels; decoding it (then converting
to float32 and resizing the short side up) asks for gigabytes. PIL reads only the header in
``Image.open``, so :func:`open_image` checks the declared size against ``max_pixels`` and the
aspect ratio against ``max_aspect`` before ``load()`` decodes anything. PIL's own decompression
bomb guard (``Image.MAX_IMAGE_PIXELS``) still applies on top; its ``DecompressionBombError`` (and
the warning it gives first) become a :class:`~modalab.data.dataset.DataError` like every other bad
image, so a source's ``data.on_error`` decides: stop with a message naming the file, or skip and
count the sample. Recipes set the limits with ``data.max_image_pixels`` and
``data.max_aspect_ratio`` (fields of every data source).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from modalab.data.dataset import DataError
from modalab.errors import clip

MAX_PIXELS = 64_000_000  # 64 MP: an 8000 x 8000 photo; far above what any recipe trains on
MAX_ASPECT = 20.0  # long side / short side


def check_size(size: tuple[int, int], where: str, max_pixels: int = MAX_PIXELS,
               max_aspect: float = MAX_ASPECT) -> None:
    """Raise :class:`DataError` if a ``(width, height)`` is empty or over a limit."""
    w, h = size
    if w <= 0 or h <= 0:
        raise DataError(f"{where}: image has no pixels ({w} x {h})")
    if w * h > max_pixels:
        raise DataError(f"{where}: image of {w} x {h} = {w * h:,} pixels exceeds data.max_image_pixels="
                        f"{max_pixels:,} (a decompression bomb, or raise the limit)")
    if max(w, h) / min(w, h) > max_aspect:
        raise DataError(f"{where}: image of {w} x {h} has aspect ratio {max(w, h) / min(w, h):.1f}, over "
                        f"data.max_aspect_ratio={max_aspect:g}")


def open_image(src: Path | bytes, where: str, max_pixels: int = MAX_PIXELS,
               max_aspect: float = MAX_ASPECT, decode: bool = True) -> Image.Image:
    """Open ``src`` (a path or the file's bytes), check its size from the header, then decode it
    (``decode=False``: only verify the file's structure, as a cheap check at build time).

    Every failure — missing file, unknown format, truncated data, a size over a limit, PIL's
    decompression-bomb guard — is a :class:`DataError` that starts with ``where``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(src if isinstance(src, Path) else io.BytesIO(src))
            try:
                check_size(im.size, where, max_pixels, max_aspect)
                if decode:
                    im.load()
                else:
                    im.verify()
            except BaseException:
                im.close()
                raise
        return im
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{where}: image file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{where}: refused as a decompression bomb ({clip(str(e), 300)}); "
                        f"data.max_image_pixels={max_pixels:,}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(f"{where}: unreadable image ({type(e).__name__}: {clip(str(e), 300)})") from None
