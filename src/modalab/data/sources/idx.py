"""IDX arrays (MNIST, Fashion-MNIST, EMNIST: ``*-idx3-ubyte[.gz]`` images, ``*-idx1-ubyte[.gz]``
labels) with a class-name list; captions come from templates ("a photo of a {label}").

The IDX header is two zero bytes, a type code (0x08 unsigned byte, 0x09 signed byte, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a
big-endian int32; the data follow big-endian. Files ending in ``.gz`` are read through gzip.

``data.images`` / ``data.labels`` is the training pair and ``data.test_images`` / ``data.test_labels``
the held-out pair (MNIST's ``t10k``); without a test pair the split is ``data.test_fraction`` by
seed. ``data.classnames`` is a list, or ``digits`` / ``fashion`` for MNIST's and Fashion-MNIST's
names. ``data.transpose`` flips EMNIST's column-major images. A file shorter than its header
promises raises naming the file and the first incomplete record, or (``on_error: skip``) keeps the
complete records and lists the rest as skipped; a label outside the class list likewise.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field

from modalab.data.dataset import DataError, DataSplits
from modalab.data.sources.pairs import PairRecord, PairsConfig, pair_splits
from modalab.registry import register

DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
CLASSNAMES = {
    "digits": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "fashion": ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                "ankle boot"],
}


def read_idx(path: Path, on_error: str = "error", skipped: list[str] | None = None) -> np.ndarray:
    """The array in an IDX file, shape (N, ...); a truncated file raises or keeps whole records."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in DTYPES:
        raise DataError(f"{path}: not an IDX file (expected 0x0000, a type code in "
                        f"{sorted(hex(k) for k in DTYPES)} and a rank; got {raw[:4].hex()})")
    ndim = raw[3]
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header promises {ndim} dimensions but the file ends first")
    dims = struct.unpack(f">{ndim}i", raw[4: 4 + 4 * ndim])
    dtype = np.dtype(DTYPES[raw[2]])
    per = int(np.prod(dims[1:], dtype=np.int64)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    whole = len(body) // per if per else dims[0]
    if whole < dims[0]:
        msg = f"{path}: record {whole} of {dims[0]} is incomplete (file truncated: {len(body)} data bytes, " \
              f"expected {dims[0] * per})"
        if on_error == "error":
            raise DataError(msg + "; set data.on_error=skip to keep the complete records")
        if skipped is not None:
            skipped.append(msg + f"; {dims[0] - whole} records skipped")
    n = min(whole, dims[0])
    return np.frombuffer(body[: n * per], dtype=dtype).reshape(n, *dims[1:])


def idx_records(images: Path, labels: Path, classnames: list[str], templates: list[str], split: str | None,
                transpose: bool, on_error: str, skipped: list[str]) -> list[PairRecord]:
    x = read_idx(images, on_error, skipped)
    y = read_idx(labels, on_error, skipped)
    if x.ndim != 3:
        raise DataError(f"{images}: expected images of shape (N, H, W), got {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{labels}: expected labels of shape (N,), got {y.shape}")
    n = min(len(x), len(y))
    if len(x) != len(y):
        msg = f"{images} has {len(x)} records but {labels} {len(y)}"
        if on_error == "error":
            raise DataError(msg)
        skipped.append(msg + f"; {abs(len(x) - len(y))} unpaired records skipped")
    if x.dtype != np.uint8:  # float or wider ints: scale to 0-255
        lo, hi = float(x.min()), float(x.max())
        x = ((x - lo) / max(hi - lo, 1e-12) * 255).round().astype(np.uint8)
    records = []
    for i in range(n):
        where = f"{images.name}:record {i}"
        c = int(y[i])
        if not 0 <= c < len(classnames):
            msg = f"{labels.name}:record {i}: label {c} is outside the {len(classnames)} class names"
            if on_error == "error":
                raise DataError(msg)
            skipped.append(msg)
            continue
        img = x[i].T if transpose else x[i]
        name = classnames[c]
        caps = tuple(t.format(label=name) for t in templates)
        records.append(PairRecord(where, Image.fromarray(np.ascontiguousarray(img), mode="L"), caps, name, split))
    return records


class IdxConfig(PairsConfig):
    images: str = Field(description="training images, *-idx3-ubyte[.gz]")
    labels: str = Field(description="training labels, *-idx1-ubyte[.gz]")
    test_images: str | None = None
    test_labels: str | None = None
    classnames: list[str] | str = Field("digits", description="a list, or 'digits' / 'fashion'")
    templates: list[str] = Field(
        default_factory=lambda: ["a photo of a {label}", "an image of a {label}", "a {label}"], min_length=1)
    transpose: bool = Field(False, description="EMNIST stores images transposed")
    channels: Literal[1, 3] = 1


@register("source", "idx", schema=IdxConfig)
def build_idx(cfg: IdxConfig, *, seed: int) -> DataSplits:
    """IDX (MNIST-format) images + labels with class names; captions from templates."""
    names = cfg.classnames
    if isinstance(names, str):
        if names not in CLASSNAMES:
            raise DataError(f"data.classnames: {names!r} is not one of {sorted(CLASSNAMES)}; give a list")
        names = CLASSNAMES[names]
    for t in cfg.templates:
        if "{label}" not in t:
            raise DataError(f"data.templates: {t!r} has no '{{label}}' placeholder")
    if (cfg.test_images is None) != (cfg.test_labels is None):
        raise DataError("data.test_images and data.test_labels go together")
    skipped: list[str] = []
    with_test = cfg.test_images is not None
    records = idx_records(Path(cfg.images), Path(cfg.labels), names, cfg.templates,
                          "train" if with_test else None, cfg.transpose, cfg.on_error, skipped)
    if with_test:
        records += idx_records(Path(cfg.test_images), Path(cfg.test_labels), names,  # type: ignore[arg-type]
                               cfg.templates, "test", cfg.transpose, cfg.on_error, skipped)
    data = pair_splits(records, cfg, seed, where=cfg.images, check=False)
    data.skipped[:0] = skipped
    return data
