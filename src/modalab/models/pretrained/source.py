"""Where a pretrained checkpoint lives and what it holds: ``hf:DIR`` / ``open_clip:FILE`` specs.

A spec names a local folder written by ``save_pretrained`` (``hf:``) or an open_clip state-dict
file next to its model-config JSON (``open_clip:``). Nothing is downloaded: a spec that does not
point at a readable local checkpoint is an error naming the path and the missing file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from modalab.errors import ModalabError

KINDS = ("hf", "open_clip")


class PretrainedError(ModalabError, ValueError):
    """A checkpoint that cannot be read or is not supported; the message names the path."""


@dataclass(frozen=True)
class Spec:
    kind: str  # "hf" | "open_clip"
    path: Path

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_spec(text: str, allowed: tuple[str, ...] = KINDS) -> Spec:
    """``"hf:DIR"`` / ``"open_clip:FILE"`` -> :class:`Spec`; the path must exist."""
    kind, sep, path = str(text).partition(":")
    if not sep or kind not in allowed or not path:
        raise PretrainedError(
            f"pretrained checkpoint {text!r}: expected one of {', '.join(k + ':PATH' for k in allowed)}"
        )
    p = Path(path).expanduser()
    if not p.exists():
        raise PretrainedError(f"pretrained checkpoint {text!r}: {p} does not exist (nothing is downloaded)")
    if kind == "hf" and not p.is_dir():
        raise PretrainedError(f"{p}: an hf: checkpoint is a folder written by save_pretrained, not a file")
    return Spec(kind, p)


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; errors name the file and what it should be."""
    if not path.is_file():
        raise PretrainedError(f"{path.parent}: missing {path.name} ({what})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise PretrainedError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise PretrainedError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def hf_config(folder: Path) -> dict[str, Any]:
    """The folder's ``config.json`` (with ``model_type``)."""
    cfg = read_json(folder / "config.json", "the model configuration save_pretrained writes")
    if "model_type" not in cfg:
        raise PretrainedError(f"{folder / 'config.json'}: no 'model_type' key; is this a transformers checkpoint?")
    return cfg


def hf_state_dict(folder: Path) -> dict[str, Tensor]:
    """All weights of a ``save_pretrained`` folder (safetensors, sharded or not; else pytorch_model.bin)."""
    from safetensors.torch import load_file

    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        files = sorted(set(read_json(index, "the shard index")["weight_map"].values()))
        out: dict[str, Tensor] = {}
        for name in files:
            out.update(load_file(str(folder / name)))
        return out
    binary = folder / "pytorch_model.bin"
    if binary.is_file():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise PretrainedError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def quick_gelu(x: Tensor) -> Tensor:
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "quick_gelu": quick_gelu,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_new": gelu_tanh,
    "gelu_fast": gelu_tanh,
}


def activation(name: str, where: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise PretrainedError(f"{where}: hidden_act {name!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def activation_name(fn: Callable[[Tensor], Tensor]) -> str:
    """The transformers name of one of :data:`ACTIVATIONS` (for export)."""
    for name, f in ACTIVATIONS.items():
        if f is fn:
            return name
    raise PretrainedError(f"activation {fn!r} has no transformers name")
