"""``train.precision: auto``: fp32 or bf16, from a short probe on this machine.

The probe times forward + backward of a copy of the model's largest transformer block at its
width, heads and MLP size, on a ``(batch, tokens, width)`` input, in float32 and under bf16
autocast (median of ``reps`` after a warm-up; alternating order), and picks bf16 only when it
takes <= ``AUTO_MARGIN`` x the float32 time. A model without a block falls back to ``F.linear``
forward + backward at its two largest linear sizes. Results are cached per process and shape.

Why a block and not a bare matmul: measured under load on this project's AMD EPYC (avx512_bf16,
no AMX), one thread, 2026-12-06: a bf16 ``F.linear`` forward + backward at the digits sizes
(2048 x 96 -> 192) ran ~2.5-11x *faster* than float32, yet a whole block at the digits scale
(B 128, 17 tokens, width 96) ran 0.62x (slower: casts, norms and softmax dominate tiny GEMMs),
while at ViT-S/16 (B 32, 197 tokens, width 384) the block ran 1.97x faster. A matmul probe would
choose bf16 for the digits recipe, where it loses.

Cost: the probe input is capped at ``PROBE_ROWS`` rows (batch x tokens); 2 x (1 + reps)
forward-backward passes of one block.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

AUTO_MARGIN = 0.9  # bf16 must take <= 90% of the fp32 time
PROBE_ROWS = 2048
DEFAULT_TOKENS = 16
Timing = tuple[float, float]  # seconds: (float32, bf16 autocast)
_CACHE: dict[tuple, Timing] = {}


def _time_both(run: Callable[[], None], device: torch.device, reps: int) -> Timing:
    """Median seconds of ``run`` in float32 and under bf16 autocast, alternating, after a warm-up."""
    def once(bf16: bool) -> float:
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with ctx:
            run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    once(False), once(True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(reps):
        for bf16 in ((False, True) if r % 2 == 0 else (True, False)):
            times[bf16].append(once(bf16))
    return statistics.median(times[False]), statistics.median(times[True])


def block_probe(block: nn.Module, batch: int, tokens: int, width: int, device: torch.device,
                reps: int = 3) -> Timing:
    """Forward + backward of a copy of ``block`` on (batch, tokens, width), batch capped so that
    batch x tokens <= PROBE_ROWS. The model's own block and gradients are untouched."""
    b = max(1, min(batch, PROBE_ROWS // max(tokens, 1)))
    key = ("block", type(block).__qualname__, tuple(p.shape for p in block.parameters()), b, tokens, str(device))
    if key not in _CACHE:
        blk = copy.deepcopy(block).to(device).train()
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(b, tokens, width, generator=g).to(device).requires_grad_()

        def run() -> None:
            blk(x).float().sum().backward()

        _CACHE[key] = _time_both(run, device, reps)
    return _CACHE[key]


def matmul_probe(m: int, k: int, n: int, device: torch.device, reps: int = 3) -> Timing:
    """``F.linear((m, k), (n, k))`` forward + backward (cached)."""
    key = ("linear", m, k, n, str(device))
    if key not in _CACHE:
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(m, k, generator=g).to(device)
        w = torch.randn(n, k, generator=g).to(device).requires_grad_()

        def run() -> None:
            F.linear(x, w).float().sum().backward()

        _CACHE[key] = _time_both(run, device, reps)
    return _CACHE[key]


def model_tokens(model: nn.Module) -> int:
    """The longest sequence a learned position table of the model covers ((1, T, D) parameters
    named ``pos_embed`` / ``positional_embedding``), else ``DEFAULT_TOKENS``."""
    ts = [p.shape[1] for n, p in model.named_parameters()
          if n.split(".")[-1] in ("pos_embed", "positional_embedding") and p.dim() == 3]
    return max(ts) if ts else DEFAULT_TOKENS


def model_probe(model: nn.Module, blocks: list[nn.Module], batch: int,
                device: torch.device) -> tuple[Callable[[], Timing], Callable[[], str]]:
    """The probe for ``model`` and what it timed (read after it ran; for run.json). A block that
    cannot run on a plain (B, T, D) input falls back to the linear probe."""
    sizes = sorted({(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)},
                   key=lambda s: -s[0] * s[1])[:2]
    rows = min(batch * DEFAULT_TOKENS, PROBE_ROWS)

    def linear() -> Timing:
        ts = [matmul_probe(rows, k, n, device) for k, n in sizes]
        return sum(t[0] for t in ts), sum(t[1] for t in ts)

    lin_what = f"F.linear forward+backward at {[(rows, k, n) for k, n in sizes]}"
    if not blocks:
        return linear, lambda: lin_what
    blk = max(blocks, key=lambda b: sum(p.numel() for p in b.parameters()))
    norm = next((m for m in blk.modules() if isinstance(m, nn.LayerNorm)), None)
    width = int(norm.normalized_shape[0]) if norm is not None else \
        next(m for m in blk.modules() if isinstance(m, nn.Linear)).in_features
    t = model_tokens(model)
    desc = [f"{type(blk).__name__} forward+backward on ({batch}, {t}, {width}), rows capped at {PROBE_ROWS}"]

    def block() -> Timing:
        try:
            return block_probe(blk, batch, t, width, device)
        except (TypeError, ValueError, RuntimeError) as e:  # a block that needs more than x
            desc[0] = f"{lin_what} (the block probe failed: {type(e).__name__}: {e})"[:400]
            return linear()

    return block, lambda: desc[0]


def choose_precision(requested: str, device: torch.device, probe: Callable[[], Timing] | None,
                     what: Callable[[], str] = lambda: "") -> tuple[str, dict[str, Any]]:
    """Resolve ``train.precision``: anything but ``auto`` is returned as is; ``auto`` is bf16 when
    ``probe()``'s bf16 time is <= ``AUTO_MARGIN`` x its float32 time. Returns the precision and
    a record for run.json."""
    if requested != "auto":
        return requested, {"requested": requested, "chosen": requested}
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp32", {"requested": "auto", "chosen": "fp32", "reason": "this GPU has no bf16"}
    if probe is None:
        return "fp32", {"requested": "auto", "chosen": "fp32", "reason": "nothing to probe"}
    fp32, bf16 = probe()
    chosen = "bf16" if bf16 <= AUTO_MARGIN * fp32 else "fp32"
    return chosen, {
        "requested": "auto", "chosen": chosen, "probe": what(),
        "fp32_ms": round(fp32 * 1e3, 4), "bf16_ms": round(bf16 * 1e3, 4),
        "bf16_speedup": round(fp32 / max(bf16, 1e-12), 3),
        "reason": f"bf16 when its probe time <= {AUTO_MARGIN} x fp32's",
    }
