"""Mixed precision: autocast contexts and the fp16 gradient scaler.

``fp32`` runs as is; ``bf16`` autocasts matmuls to bfloat16 on CPU and GPU (no scaler needed: the
exponent range is float32's); ``fp16`` autocasts to float16 and, on CUDA, scales the loss with a
``torch.amp.GradScaler`` so small gradients do not underflow. Parameters and optimizer states stay
float32 in every mode.

``auto`` is resolved to fp32 or bf16 by a probe on the machine (``train/precision_auto.py``).

Activation memory: ``enable_grad_checkpointing`` turns on recomputation in the backward pass for
every module with a ``grad_checkpointing`` flag (``layers.Transformer``) under the named encoders.
"""

from __future__ import annotations

import contextlib
import fnmatch
from typing import Sequence

import torch
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast context for ``fp32`` (none), ``bf16`` or ``fp16`` on ``device``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in DTYPES:
        raise ValueError(f"train.precision={precision!r}; expected fp32, bf16 or fp16")
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 on CUDA; None otherwise (bf16 and fp32 need none)."""
    if precision == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def enable_grad_checkpointing(model: nn.Module, which: bool | Sequence[str]) -> list[str]:
    """Set ``grad_checkpointing = True`` on checkpointable modules under ``which``.

    ``which`` is True (everywhere) or module-name patterns such as ``["image_encoder"]`` (a
    pattern also covers everything below the module it names). Returns the modules switched on;
    patterns that reach no checkpointable module are an error.
    """
    pats = ["*"] if which is True else list(which or [])
    done = []
    for name, m in model.named_modules():
        if hasattr(m, "grad_checkpointing") and any(
            fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, p + ".*") for p in pats
        ):
            m.grad_checkpointing = True
            done.append(name)
    if pats and not done:
        mods = [n for n, m in model.named_modules() if hasattr(m, "grad_checkpointing")]
        raise ValueError(
            f"train.grad_checkpointing={list(pats)} reaches no module with gradient checkpointing; "
            f"checkpointable modules: {', '.join(mods) or 'none'}"
        )
    return done
