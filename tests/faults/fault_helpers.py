"""Helpers of the fault suite: a tiny CLIP recipe, hand-made PNG headers, shard folders."""

import io
import json
import struct
import zlib
from pathlib import Path

import torch
from safetensors.torch import load_file

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml")
TINY = [
    "model.vision.width=16", "model.vision.depth=1", "model.text.width=16", "model.text.depth=1",
    "model.embed_dim=16", "train.steps=12", "train.batch_size=32", "train.checkpoint_every=4",
    "train.log_every=1", "train.eval_every=0", "train.num_threads=1", "run.progress=false",
    "optim.warmup_steps=2", "eval.batch_size=512",
]


def png_header(width: int, height: int, mode: int = 0) -> bytes:
    """A PNG that declares ``width x height`` 8-bit pixels (colour type ``mode``: 0 grey) but holds
    only a few bytes of data: what a decompression bomb looks like before it is decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def png(width: int = 8, height: int = 8, value: int = 128) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), value).save(buf, format="PNG")
    return buf.getvalue()


def image_samples(n: int, start: int = 0, classes: int = 2) -> list[dict]:
    return [{"__key__": f"{i:09d}", "png": png(8, 8, 10 * (i % 20)), "txt": f"a digit {i % classes}",
             "json": json.dumps({"label": str(i % classes)})} for i in range(start, start + n)]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(sorted((run / "checkpoints").glob("step_*"))[-1] / "model.safetensors"))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def losses(run: Path) -> list[tuple[int, float]]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"]) for r in recs if "loss" in r and "event" not in r]
