"""Mixed precision: autocast contexts and the fp16 gradient scaler.

``fp32`` runs as is; ``bf16`` autocasts matmuls to bfloat16 on CPU and GPU (no scaler needed: the
exponent range is float32's); ``fp16`` autocasts to float16 and, on CUDA, scales the loss with a
``torch.amp.GradScaler`` so small gradients do not underflow. Parameters and optimizer states stay
float32 in every mode.

``auto`` (:func:`choose_precision`): a short probe times ``F.linear`` at the model's largest
layer sizes in float32 and under bf16 autocast (weights converted on every call, as in training)
and picks bf16 only where it is at least ``1 / AUTO_MARGIN`` times faster; fp32 otherwise. The
probe is cached per process and shape. On a CPU without native bf16 GEMMs (no AMX) bf16 loses
(measured 0.55-0.60x at the digits scale, and ~9x slower on an AVX-512 EPYC); with AMX or on a GPU
it wins at ViT sizes.

Activation memory: ``enable_grad_checkpointing`` turns on recomputation in the backward pass for
every module with a ``grad_checkpointing`` flag (``layers.Transformer``) under the named encoders.
"""

from __future__ import annotations

import contextlib
import fnmatch
import statistics
import time
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast context for ``fp32`` (none), ``bf16`` or ``fp16`` on ``device``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in DTYPES:
        raise ValueError(f"train.precision={precision!r}; expected fp32, bf16 or fp16")
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


AUTO_MARGIN = 0.9  # bf16 must take <= 90% of the fp32 time
PROBE_ROWS_MAX = 4096
Probe = Callable[[int, int, int, torch.device], tuple[float, float]]
_PROBE_CACHE: dict[tuple[int, int, int, str], tuple[float, float]] = {}


def matmul_probe(m: int, k: int, n: int, device: torch.device, reps: int = 5) -> tuple[float, float]:
    """Median seconds of ``F.linear((m, k), (n, k))`` in float32 and under bf16 autocast (cached)."""
    key = (m, k, n, str(device))
    if key in _PROBE_CACHE:
        return _PROBE_CACHE[key]
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(m, k, generator=g).to(device)
    w = torch.randn(n, k, generator=g).to(device)
    out = []
    for ctx in (contextlib.nullcontext, lambda: torch.autocast(device.type, dtype=torch.bfloat16)):
        times = []
        for i in range(reps + 1):  # the first call warms up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            with ctx():
                F.linear(x, w)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                times.append(time.perf_counter() - t0)
        out.append(statistics.median(times))
    _PROBE_CACHE[key] = (out[0], out[1])
    return _PROBE_CACHE[key]


def probe_shapes(model: nn.Module, rows: int, top: int = 2) -> list[tuple[int, int, int]]:
    """``(m, k, n)`` of the ``top`` largest distinct ``nn.Linear`` sizes; ``m = rows`` (capped)."""
    sizes = sorted({(mod.in_features, mod.out_features) for mod in model.modules()
                    if isinstance(mod, nn.Linear)}, key=lambda s: -s[0] * s[1])
    m = max(1, min(rows, PROBE_ROWS_MAX))
    return [(m, k, n) for k, n in sizes[:top]]


def choose_precision(requested: str, shapes: list[tuple[int, int, int]], device: torch.device,
                     probe: Probe = matmul_probe) -> tuple[str, dict[str, Any]]:
    """Resolve ``train.precision``: anything but ``auto`` is returned as is; ``auto`` is bf16 when
    the summed probe time of ``shapes`` in bf16 is <= ``AUTO_MARGIN`` x the fp32 time.

    Returns the precision and a record for run.json.
    """
    if requested != "auto":
        return requested, {"requested": requested, "chosen": requested}
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp32", {"requested": "auto", "chosen": "fp32", "reason": "this GPU has no bf16"}
    if not shapes:
        return "fp32", {"requested": "auto", "chosen": "fp32", "reason": "no linear layer to probe"}
    fp32 = bf16 = 0.0
    for m, k, n in shapes:
        a, b = probe(m, k, n, device)
        fp32, bf16 = fp32 + a, bf16 + b
    chosen = "bf16" if bf16 <= AUTO_MARGIN * fp32 else "fp32"
    return chosen, {
        "requested": "auto", "chosen": chosen, "shapes": [list(s) for s in shapes],
        "fp32_ms": round(fp32 * 1e3, 4), "bf16_ms": round(bf16 * 1e3, 4),
        "bf16_speedup": round(fp32 / max(bf16, 1e-12), 3),
        "reason": f"bf16 chosen when its probe time <= {AUTO_MARGIN} x fp32's",
    }


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
