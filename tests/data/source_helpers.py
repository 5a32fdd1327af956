"""Plain helpers for the dataset-format reader tests, imported by name (``from source_helpers import png``):
a conftest is not importable reliably when several test folders, each with its own conftest, run together."""

import io

from PIL import Image


def png(i: int, fmt: str = "PNG", size: int = 8) -> bytes:
    """A small RGB image whose colour depends on ``i``."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color=(i * 37 % 256, i * 91 % 256, i * 13 % 256)).save(buf, format=fmt)
    return buf.getvalue()


def source_cfg(name: str, **kw):
    """The validated ``data`` section of source ``name`` (image_size 8 unless given)."""
    from modalab import registry

    registry.load_all()
    return registry.get("source", name).schema.model_validate({"source": name, "image_size": 8, **kw})
