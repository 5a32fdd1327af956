"""A class-per-folder video dataset (UCF101 / HMDB51 layout): ``ROOT/<class>/<file>.<ext>``.

Class names are the sorted sub-folder names; files with a video extension (.mp4 .avi .mkv .webm)
are the clips. If ``ROOT`` (or ``split_dir``) holds UCF-style split files
``trainlist{NN}.txt`` / ``testlist{NN}.txt`` (lines ``<class>/<file> [label]``), split ``NN``
fixes train and test; otherwise a stratified random split by the run seed. Validation is carved
from train (``data.val_fraction``).

Every file is probed once when the source is built (packets only, no decoding): a file that is
not a readable video stops the run with a message naming it (``on_error: error``), or is skipped,
counted and listed in ``DataSplits.skipped`` (``on_error: skip``). A split-file line that names no
file, or a class that is not a folder, is treated the same way. Frames are decoded through the
seek reader (``video/decode.py``), resized to ``size`` x ``size``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
from pydantic import Field

from modalab.config import DataBase
from modalab.registry import register

if TYPE_CHECKING:
    from modalab.data.dataset import DataSplits

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm")


class VideoFolderConfig(DataBase):
    root: str = Field(..., description="folder holding one sub-folder per class")
    split_dir: str | None = Field(None, description="where trainlist/testlist files are (default: root)")
    split: int = Field(1, ge=1, description="which trainlist{NN}/testlist{NN} pair to use")
    frames_per_clip: int = Field(8, gt=0, description="frames the model sees")
    sampling: Literal["uniform", "tsn"] = "tsn"
    size: int = Field(64, ge=8, description="frames are resized to size x size")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="used when there are no split files")


def list_video_folder(root: str | Path) -> tuple[list[str], list[dict]]:
    """Class names (sorted sub-folders) and items ``{path, label}`` (label = class index)."""
    root = Path(root)
    if not root.is_dir():
        from modalab.data.dataset import DataError

        raise DataError(f"video_folder: root {root} is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    items = []
    for y, name in enumerate(classes):
        for p in sorted((root / name).iterdir()):
            if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
                items.append({"path": p, "label": y})
    if not items:
        from modalab.data.dataset import DataError

        raise DataError(f"video_folder: no {'/'.join(VIDEO_EXTS)} files in class folders under {root} "
                        f"(expected ROOT/<class>/<file>; found folders {classes[:6]})")
    return classes, items


def find_split_files(folder: str | Path, split: int) -> tuple[Path, Path] | None:
    """``trainlist{NN}.txt`` and ``testlist{NN}.txt`` for split ``NN`` in ``folder``, or None."""
    folder = Path(folder)
    found = {}
    for kind in ("train", "test"):
        hits = [p for p in folder.glob(f"{kind}list*.txt")
                if (m := re.fullmatch(rf"{kind}list0*(\d+)\.txt", p.name)) and int(m.group(1)) == split]
        if hits:
            found[kind] = hits[0]
    if not found:
        return None
    if len(found) == 1:
        from modalab.data.dataset import DataError

        have = next(iter(found.values()))
        raise DataError(f"video_folder: {have} has no matching "
                        f"{'testlist' if 'train' in found else 'trainlist'} file for split {split}")
    return found["train"], found["test"]


def read_split_file(path: Path, root: Path, bad: list[str]) -> list[Path]:
    """Paths listed in a UCF-style split file; lines naming no file go to ``bad`` ("file:line: why")."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        rel = line.split()[0]
        target = (root / rel).resolve()
        if not target.is_relative_to(root.resolve()):
            bad.append(f"{path}:{n}: {rel!r} points outside {root}")
        elif not target.is_file():
            bad.append(f"{path}:{n}: {rel!r} is not a file under {root}")
        else:
            out.append(target)
    return out


def _check(items: list[dict], on_error: str, skipped: list[str]) -> list[dict]:
    """Probe every file; unreadable ones raise (error) or are counted and dropped (skip)."""
    from modalab.data.dataset import DataError
    from modalab.video.decode import VideoError, probe

    ok = []
    for it in items:
        try:
            info = probe(it["path"])
        except VideoError as e:
            if on_error == "error":
                raise DataError(f"video_folder: {e} (set data.on_error: skip to skip and count "
                                "bad files)") from e
            skipped.append(f"{it['path']}: {e}")
            continue
        ok.append({**it, "info": info})
    return ok


@register("source", "video_folder", schema=VideoFolderConfig)
def build_video_folder(cfg: VideoFolderConfig, *, seed: int) -> "DataSplits":
    """Class-per-folder videos; Sample.media = (T, 3, size, size) normalised."""
    import torch
    import torch.nn.functional as F

    from modalab.data.dataset import DataError, DataSplits, SampleDataset, carve_val, stratified_split
    from modalab.data.sample import Sample
    from modalab.data.sources.moving_digits import _to_video
    from modalab.video import sampling
    from modalab.video.decode import read_frames

    root = Path(cfg.root)
    classes, items = list_video_folder(root)
    skipped: list[str] = []
    splits = find_split_files(cfg.split_dir or root, cfg.split)
    if splits is not None:
        by_path = {p["path"].resolve(): i for i, p in enumerate(items)}
        bad: list[str] = []
        listed = [read_split_file(f, root, bad) for f in splits]
        if bad and cfg.on_error == "error":
            raise DataError(f"video_folder: {bad[0]} ({len(bad)} such line(s))")
        skipped.extend(bad)
        lists = [[by_path[p] for p in ps if p in by_path] for ps in listed]
        train_items = [items[i] for i in lists[0]]
        test_items = [items[i] for i in lists[1]]
    else:
        train_items, test_items = items, []
    train_items = _check(train_items, cfg.on_error, skipped)
    test_items = _check(test_items, cfg.on_error, skipped)
    if splits is None:
        labels = [it["label"] for it in train_items]
        tr, te = stratified_split(labels, len(train_items), cfg.test_fraction, seed)
        train_items, test_items = [train_items[i] for i in tr], [train_items[i] for i in te]
    if not train_items or not test_items:
        raise DataError(f"video_folder: {root}: {len(train_items)} train and {len(test_items)} "
                        f"test videos left ({len(skipped)} skipped); need both")
    labels = [it["label"] for it in train_items]
    tr_idx, val_idx = carve_val(list(range(len(train_items))), cfg.val_fraction, seed, labels=labels)

    def make(rows: list[dict], train: bool) -> Callable[[int], Sample]:
        def load(i: int) -> Sample:
            row = rows[i]
            n = row["info"].num_frames
            if cfg.sampling == "tsn":
                s = int(torch.randint(2**31 - 1, ())) if train else i
                idx = sampling.tsn(n, cfg.frames_per_clip, train=train, seed=s).indices
            else:
                idx = sampling.uniform(n, cfg.frames_per_clip).indices
            frames = read_frames(row["path"], idx, info=row["info"])  # (T, H, W, 3) uint8
            video = _to_video(frames)  # (T, 3, H, W)
            if video.shape[-2:] != (cfg.size, cfg.size):
                video = F.interpolate(video, size=(cfg.size, cfg.size), mode="bilinear",
                                      align_corners=False)  # (T, 3, S, S)
            return Sample(id=str(row["path"]), media=video, text=classes[row["label"]],
                          label=row["label"], meta={"frames": np.asarray(idx).tolist()})
        return load

    tr_rows = [train_items[i] for i in tr_idx]
    val_rows = [train_items[i] for i in val_idx]
    return DataSplits(
        train=SampleDataset(len(tr_rows), make(tr_rows, True)),
        test=SampleDataset(len(test_items), make(test_items, False)),
        val=SampleDataset(len(val_rows), make(val_rows, False)) if val_rows else None,
        classnames=classes,
        texts=[c.replace("_", " ") for c in classes],
        image_size=cfg.size,
        channels=3,
        skipped=skipped,
    )
