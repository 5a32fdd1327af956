"""Checkpoints that lose nothing and load safely.

A checkpoint is a folder ``checkpoints/step_<N>/`` with
- ``model.safetensors``: the weights (no pickle); ``<name>.safetensors`` for other stateful modules
  (e.g. ``objective.safetensors`` holding negative queues);
- ``trainer_state.pt``: optimizer, gradient-scaler and RNG states (of every rank: torch, CUDA,
  numpy, python), loadable with ``weights_only=True``;
- ``trainer_state.json``: step, stage, data position, loop counters, the task's JSON state;
- ``manifest.json``: sha256 of every file, written last, so a partial checkpoint is detectable.
Each file is written to a temporary name, fsync'd and renamed; the folder is renamed into place.
``latest_valid`` returns the newest checkpoint whose checksums match, warning about (and
skipping) a truncated or corrupted newer one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and a rename."""
    _fsync_write(Path(path), data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    _fsync_write(Path(path), text.encode("utf-8"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous, de-duplicated tensors for safetensors (tied weights are stored once each)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    keep: int = 2,
    extra: dict[str, nn.Module] | None = None,
    trainer: dict[str, Any] | None = None,
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``ckpt_dir/step_<step>`` atomically and keep only the newest ``keep`` checkpoints.

    ``trainer`` holds more tensors/containers for ``trainer_state.pt`` (e.g. ``rng`` of every
    rank from :func:`rng_state`, ``scaler``); its keys override the defaults. ``weights``
    replaces ``model``'s state dict (e.g. full tensors gathered from FSDP shards).
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"step_{step:08d}"
    tmp = ckpt_dir / f".tmp_step_{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(weights if weights is not None else model_state(model), str(tmp / "model.safetensors"))
    for name, module in (extra or {}).items():  # e.g. the objective's negative queues
        save_file(model_state(module), str(tmp / f"{name}.safetensors"))
    payload: dict[str, Any] = {"rng": [rng_state()]}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    payload.update(trainer or {})
    torch.save(payload, tmp / "trainer_state.pt")
    _fsync_write(tmp / "trainer_state.json", json.dumps({"step": step, **state}, indent=2).encode())
    files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
    _fsync_write(tmp / "manifest.json", json.dumps({"step": step, "sha256": files}).encode())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_dir)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint folders, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith("step_"))


def verify(path: Path) -> bool:
    """True when every file listed in the manifest exists with the recorded checksum."""
    man = path / "manifest.json"
    try:
        files = json.loads(man.read_text())["sha256"]
        return all((path / n).is_file() and _sha256(path / n) == h for n, h in files.items())
    except (OSError, ValueError, KeyError):
        return False


def load_weights(path: Path, model: nn.Module, strict: bool = True) -> None:
    """Load ``model.safetensors`` from a checkpoint folder (or a .safetensors file)."""
    file = path if path.suffix == ".safetensors" else path / "model.safetensors"
    missing, unexpected = model.load_state_dict(load_file(str(file)), strict=strict)
    if strict and (missing or unexpected):  # pragma: no cover - load_state_dict raises first
        raise RuntimeError(f"{file}: missing {missing}, unexpected {unexpected}")


def load_trainer_state(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(torch payload loaded with weights_only=True, JSON state)."""
    payload = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
    state = json.loads((path / "trainer_state.json").read_text())
    return payload, state


def latest_valid(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint that passes :func:`verify`; newer broken ones are skipped with a warning."""
    for path in reversed(list_checkpoints(ckpt_dir)):
        if verify(path):
            return path
        warnings.warn(
            f"checkpoint {path} is truncated or corrupted (checksums in manifest.json do not "
            f"match); trying the previous one",
            RuntimeWarning,
            stacklevel=2,
        )
    return None


# ------------------------------------------------------------------------------ RNG states


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch, CUDA, numpy, python) as tensors and plain containers,
    so ``torch.load(weights_only=True)`` can read them back."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Run a block without moving this process's RNG streams (torch, CUDA, numpy, python): what the
    block draws is undone on exit, so an evaluation in the middle of training leaves the rest of the
    run exactly as it would be without it."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state(
            ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
        )
    if "python" in state:
        p = state["python"]
        random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
