"""Hugging Face ``datasets`` tables read with pyarrow alone: parquet files (as on the Hub) or a
folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (Arrow stream files
listed in ``state.json``), with an image column and a text column.

``data.path`` is a parquet file, a folder of parquet files (searched recursively), a
``save_to_disk`` folder, or a ``DatasetDict`` folder (``dataset_dict.json`` + one folder per
split). Splits: a ``DatasetDict``'s ``train`` / ``test`` (``validation`` is kept out), or parquet
files named ``train-*`` / ``test-*`` / ``validation-*`` as the Hub names them; otherwise
``data.test_fraction`` by seed.

The image cell is the ``datasets.Image`` struct (``bytes``, ``path``; a path is resolved inside the
table's folder) or plain binary. The text cell is a string or a list of strings (several captions).
An optional ``data.label_column`` holds class names, or integers named by the ``ClassLabel`` names
stored in the table's ``huggingface`` schema metadata. A missing column raises naming the file and
the columns it has; an empty or unreadable cell raises naming file and row, or is skipped and listed
with ``data.on_error: skip``. Needs pyarrow (the ``tables`` extra; also in ``test``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from modalab.data.dataset import DataError, DataSplits
from modalab.data.sources.pairs import PairRecord, PairsConfig, inside, pair_splits
from modalab.registry import register

SPLIT_NAMES = {"train": "train", "test": "test", "validation": "val", "valid": "val", "val": "val"}


def _pa() -> Any:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise DataError("data.source=hf_table needs pyarrow: pip install 'modalab[tables]'") from None
    return pyarrow


def table_files(path: Path) -> list[tuple[Path, str | None]]:
    """``(file, split or None)`` for every table file under ``path`` (see the module docstring)."""
    if path.is_file():
        return [(path, None)]
    if not path.is_dir():
        raise DataError(f"data.path: {path} is neither a parquet file nor a folder")
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        return [(f, SPLIT_NAMES.get(s, s)) for s in splits for f, _ in table_files(path / s)]
    if (path / "state.json").is_file():
        state = json.loads((path / "state.json").read_text())
        return [(path / d["filename"], None) for d in state.get("_data_files", [])]
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise DataError(f"{path}: no parquet files, state.json (save_to_disk) or dataset_dict.json")
    return [(f, SPLIT_NAMES.get(f.name.split("-")[0].split(".")[0])) for f in files]


def read_table(path: Path) -> Any:
    pa = _pa()
    try:
        if path.suffix == ".parquet":
            return pa.parquet.read_table(path)
        with pa.memory_map(str(path)) as src:  # save_to_disk writes the Arrow stream format
            return pa.ipc.open_stream(src).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable parquet / Arrow file ({type(e).__name__}: {e})") from None


def class_label_names(table: Any, column: str) -> list[str] | None:
    """ClassLabel names of ``column`` from the ``huggingface`` schema metadata, if stored."""
    meta = (table.schema.metadata or {}).get(b"huggingface")
    if not meta:
        return None
    feat = json.loads(meta).get("info", {}).get("features", {}).get(column, {})
    return feat.get("names") if isinstance(feat, dict) else None


def table_records(path: Path, split: str | None, cfg: "HFTableConfig", skipped: list[str]) -> list[PairRecord]:
    table = read_table(path)
    cols = table.column_names
    for key, col in (("image_column", cfg.image_column), ("text_column", cfg.text_column),
                     ("label_column", cfg.label_column)):
        if col is not None and col not in cols:
            raise DataError(f"{path}: no column {col!r} (data.{key}); the table has {cols}")
    names = class_label_names(table, cfg.label_column) if cfg.label_column else None
    images, texts = table.column(cfg.image_column), table.column(cfg.text_column).to_pylist()
    labels = table.column(cfg.label_column).to_pylist() if cfg.label_column else [None] * len(texts)
    records = []
    for i, (text, label) in enumerate(zip(texts, labels)):
        where = f"{path.name}:row {i}"
        caps = [text] if isinstance(text, str) else list(text or [])
        caps = [" ".join(str(c).split()) for c in caps if isinstance(c, str) and c.strip()]
        if not caps or (cfg.label_column and label is None):
            msg = f"{where}: empty {cfg.text_column!r}" if not caps else f"{where}: empty {cfg.label_column!r}"
            if cfg.on_error == "error":
                raise DataError(msg + " (set data.on_error=skip to skip such rows)")
            skipped.append(msg)
            continue
        if isinstance(label, int) and names is not None:
            label = names[label]
        records.append(PairRecord(where, _cell(images, i, path, where), tuple(caps),
                                  None if label is None else str(label), split))
    return records


def _cell(column: Any, i: int, path: Path, where: str) -> Any:
    """A zero-argument reader of row ``i``'s image (bytes, or a path inside the table's folder)."""
    def read() -> Any:
        v = column[i].as_py()
        if isinstance(v, dict):
            if v.get("bytes"):
                return v["bytes"]
            if v.get("path"):
                return inside(path.parent, v["path"], where)
            return b""
        return v if v is not None else b""
    return read


class HFTableConfig(PairsConfig):
    path: str = Field(description="parquet file or folder, or a save_to_disk folder")
    image_column: str = "image"
    text_column: str = "text"
    label_column: str | None = None


@register("source", "hf_table", schema=HFTableConfig)
def build_hf_table(cfg: HFTableConfig, *, seed: int) -> DataSplits:
    """Hugging Face datasets tables (parquet or save_to_disk) with image + text columns, via pyarrow."""
    skipped: list[str] = []
    records = [r for f, split in table_files(Path(cfg.path)) for r in table_records(f, split, cfg, skipped)]
    kept_out = sum(r.split == "val" for r in records)
    data = pair_splits(records, cfg, seed, where=cfg.path)
    data.skipped[:0] = skipped
    if kept_out:
        data.skipped.append(f"{kept_out} 'validation' rows kept out of train and test")
    return data
