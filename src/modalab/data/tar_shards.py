"""WebDataset-format tar shards: write them from a manifest, stream them back split by process
and DataLoader worker, resumable mid-epoch.

A shard is a plain tar file; the files of one sample share a key (``000000123.png``,
``000000123.txt``, ``000000123.json``), as in the ``webdataset`` package. ``shards.json`` next to
the shards lists each shard's sample count, every caption and the class names, so a run can build
its vocabulary and compute positions without reading the data.

Reading (``ShardStream``, a ``torch.utils.data.IterableDataset``):
- each epoch the shard order is shuffled from ``(seed, epoch)``, the same on every process;
- shard ``i`` goes to reader slot ``i % (world x workers)`` (slot = ``rank x workers + worker``),
  so every sample is read exactly once per epoch across all processes and workers (this needs at
  least ``world x workers`` shards);
- each slot shuffles its samples with a buffer (``shuffle_buffer``) seeded from
  ``(seed, epoch, slot)``;
- ``set_position(batches, batch_size)`` skips what this process already consumed this epoch:
  the DataLoader takes batches from its workers in turn, so the number each worker produced is
  known and each skips that many samples (without decoding them);
- members are read into memory with ``tarfile.extractfile``; nothing is ever written to disk, and
  a member whose name is absolute or contains ``..`` is treated as corrupt. A corrupt member or
  sample is skipped and counted (``on_error: skip``) or raises (``on_error: error``).
"""

from __future__ import annotations

import io
import json
import random
import tarfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from torch.utils.data import IterableDataset, get_worker_info

from modalab.data.skiplog import SkipLog
from modalab.data.tar_read import ShardError, iter_tar  # noqa: F401 - re-exported
from modalab.errors import clip

INDEX = "shards.json"
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


# ------------------------------------------------------------------------------------ writing


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_shards(samples: Iterable[dict[str, Any]], out_dir: Path, size: int = 1000,
                 prefix: str = "shard") -> dict[str, Any]:
    """Write ``{"__key__": str, ext: bytes | str, ...}`` samples into tar shards of ``size``.

    Returns (and writes as ``shards.json``) the index: shard names and counts, captions (``txt`` and
    any ``captions`` list in ``json``), classes (``label`` in ``json``).
    """
    if size <= 0:
        raise ValueError(f"shard size must be positive, got {size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    texts: list[str] = []
    classes: set[str] = set()
    tar, count = None, 0
    for s in samples:
        if tar is None or count == size:
            if tar is not None:
                tar.close()
                shards[-1]["count"] = count
            name = f"{prefix}-{len(shards):06d}.tar"
            tar, count = tarfile.open(out_dir / name, "w"), 0
            shards.append({"name": name, "count": 0})
        key = str(s["__key__"])
        if "/" in key or key.startswith("."):
            raise ShardError(f"sample key {key!r} must be a plain name")
        for ext, value in s.items():
            if ext == "__key__":
                continue
            data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            _add(tar, f"{key}.{ext}", data)
        if isinstance(s.get("txt"), str):
            texts.append(s["txt"])
        meta = json.loads(s["json"]) if "json" in s else {}
        texts.extend(str(t) for t in meta.get("captions", []))  # alternative captions, for the vocabulary
        if meta.get("label") is not None:
            classes.add(str(meta["label"]))
        count += 1
    if tar is not None:
        tar.close()
        shards[-1]["count"] = count
    index = {"shards": shards, "texts": sorted(set(texts)), "classnames": sorted(classes)}
    (out_dir / INDEX).write_text(json.dumps(index, indent=1))
    return index


def manifest_samples(manifest: Path, root: Path | None = None) -> Iterator[dict[str, Any]]:
    """Samples of a JSONL/CSV manifest (``data/sources/manifest.py``): image bytes, caption, label."""
    from modalab.data.sources.manifest import parse_rows

    manifest = Path(manifest)
    for i, row in enumerate(parse_rows(manifest, Path(root) if root else manifest.parent)):
        ext = row.image.suffix.lower().lstrip(".") or "img"
        meta = {"label": row.label, "split": row.split, "source": f"{manifest.name}:{row.line}"}
        yield {"__key__": f"{i:09d}", ext: row.image.read_bytes(), "txt": row.text,
               "json": json.dumps(meta)}


# ------------------------------------------------------------------------------------ reading


def read_index(path: Path) -> dict[str, Any]:
    f = Path(path) / INDEX
    if not f.is_file():
        raise ShardError(f"{path}: no {INDEX}; write shards with `modalab shards write MANIFEST {path}`")
    return json.loads(f.read_text())


def worker_batches(k: int, per_worker: list[int]) -> tuple[list[int], int]:
    """How many batches each worker produced when the DataLoader has yielded ``k`` (in-order,
    round-robin over workers that still have data), and the worker whose turn is next."""
    done = [0] * len(per_worker)
    w = 0
    for _ in range(k):
        for _ in range(len(per_worker)):
            if done[w] < per_worker[w]:
                break
            w = (w + 1) % len(per_worker)
        else:
            break
        done[w] += 1
        w = (w + 1) % len(per_worker)
    return done, w


class ShardStream(IterableDataset):
    """Stream decoded samples from shards (see the module docstring for splitting and resume).

    Args:
        path: folder holding the shards and ``shards.json``.
        decode: ``(key, {ext: bytes}) -> sample`` (e.g. a ``data.sample.Sample``).
        shuffle_buffer: samples held for shuffling (0 = shard order).
        rank, world: this process and the process count (default: from torch.distributed).
        num_workers: DataLoader workers per process (for resume arithmetic).
        drop_last: whether each worker's last partial batch is dropped (as the DataLoader does).
        index: the index as ``shards.json`` holds it, for shards without one (a shard name may be
            an absolute path); default: read ``path / shards.json``.
    """

    def __init__(self, path: Path, decode: Callable[[str, dict[str, bytes]], Any], *,
                 shuffle_buffer: int = 1000, seed: int = 0, rank: int | None = None,
                 world: int | None = None, num_workers: int = 0, drop_last: bool = False,
                 on_error: str = "skip", index: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.index = index if index is not None else read_index(self.path)
        self.decode, self.buffer, self.seed = decode, shuffle_buffer, seed
        if rank is None or world is None:
            from modalab._dist_info import world_info

            rank, world = world_info()
        self.rank, self.world, self.workers = rank, world, max(1, num_workers)
        self.drop_last, self.on_error = drop_last, on_error
        self.epoch, self.position, self.batch_size = 0, 0, 1
        self.skips = SkipLog()  # also collects what DataLoader worker processes skip
        if len(self.index["shards"]) < self.world * self.workers:
            raise ShardError(
                f"{path}: {len(self.index['shards'])} shards cannot feed {self.world} process(es) x "
                f"{self.workers} worker(s); write smaller shards (--size) or use fewer workers"
            )

    @property
    def skipped(self) -> list[str]:
        """Every distinct skip message so far, from this process and its DataLoader workers."""
        return self.skips.messages()

    def __len__(self) -> int:
        """Samples in the whole index (all processes and workers together)."""
        return sum(s["count"] for s in self.index["shards"])

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0

    def set_position(self, batches: int, batch_size: int) -> None:
        """This process already consumed ``batches`` batches of ``batch_size`` this epoch."""
        self.position, self.batch_size = batches, batch_size

    def slot_shards(self, slot: int) -> list[dict[str, Any]]:
        order = list(range(len(self.index["shards"])))
        random.Random(self.seed * 100_003 + self.epoch).shuffle(order)
        n = self.world * self.workers
        return [self.index["shards"][i] for i in order if i % n == slot]

    def _per_worker_batches(self) -> list[int]:
        out = []
        for w in range(self.workers):
            count = sum(s["count"] for s in self.slot_shards(self.rank * self.workers + w))
            out.append(count // self.batch_size if self.drop_last else -(-count // self.batch_size))
        return out

    def raw(self, slot: int) -> Iterator[tuple[str, dict[str, bytes]]]:
        """The shuffled, undecoded sample stream of one reader slot."""
        rng = random.Random((self.seed * 100_003 + self.epoch) * 1_009 + slot)
        buf: list[tuple[str, dict[str, bytes]]] = []
        for shard in self.slot_shards(slot):
            for item in iter_tar(self.path / shard["name"], self.on_error, self.skips, shard.get("count")):
                if self.buffer <= 1:
                    yield item
                    continue
                buf.append(item)
                if len(buf) >= self.buffer:
                    yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != self.workers:
            raise ShardError(f"ShardStream(num_workers={self.workers}) used by a DataLoader with {info.num_workers}")
        skip, role = 0, worker
        if self.position:
            # a new DataLoader starts with worker 0: worker w takes over the reader whose turn
            # comes w-th from now, after skipping what that reader already produced
            done, nxt = worker_batches(self.position, self._per_worker_batches())
            role = (worker + nxt) % self.workers
            skip = done[role] * self.batch_size
        for key, files in self.raw(self.rank * self.workers + role):
            if skip:
                skip -= 1
                continue
            try:
                yield self.decode(key, files)
            except Exception as e:  # noqa: BLE001 - any decoder failure is a bad sample
                where = self.path / getattr(files, "shard", "")
                msg = f"{where}: sample {key!r} could not be decoded ({type(e).__name__}: {clip(str(e))})"
                if self.on_error == "error":
                    raise ShardError(msg) from e
                self.skips.append(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)


def decode_image_text(image_size: int, channels: int, max_pixels: int = 64_000_000,
                      max_aspect: float = 20.0) -> Callable[[str, dict[str, bytes]], Any]:
    """A decoder to ``data.sample.Sample``: the first image member (size limits checked from its
    header, ``data/safe_image.py``), ``txt``, label from ``json``."""
    from modalab.data.safe_image import open_image
    from modalab.data.sample import Sample
    from modalab.data.transforms import normalize, pil_to_tensor, resize_center_crop

    def decode(key: str, files: dict[str, bytes]) -> Any:
        ext = next((e for e in IMAGE_EXTS if e in files), None)
        if ext is None:
            raise ShardError(f"sample {key!r} has no image member (png/jpg/jpeg/webp)")
        with open_image(files[ext], f"sample {key!r} ({key}.{ext})", max_pixels, max_aspect) as img:
            x = normalize(resize_center_crop(pil_to_tensor(img, channels), image_size))
        meta = json.loads(files["json"]) if "json" in files else {}
        return Sample(id=key, media=x, text=files.get("txt", b"").decode("utf-8"), meta=meta)

    return decode
