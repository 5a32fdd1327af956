"""``train.compile``: torch.compile of the transformer blocks, when it pays, with a fallback that
says why.

What is compiled: every module of the given block types (``layers.Block`` and its kin), in place
(``nn.Module.compile``), so the speed-up reaches every call path — a task may call
``model.encode_image`` or a submodule directly, never the model's ``forward``. All blocks share
one code object, so Dynamo compiles it once per input signature (parameters are graph inputs).

When (``decide``):

- ``false``: eager.
- ``true``: compile, unless the toolchain is missing (no C++ compiler for inductor on CPU, no
  Triton on CUDA, Dynamo unsupported on this Python): then a warning and eager.
- ``auto``: compile when the toolchain is there and the device is CUDA; eager on CPU. Measured on
  CPU (docs/benchmarks.md, 2026-12-07: 2 idle AVX2 cores, torch 2.13, forward + backward + AdamW,
  compiled blocks beside eager ones): ViT-S/16 1.08x, ViT-B/16 0.92x, a ViT-S block at batch 8
  0.91x and the digits model 0.87x (these two under load). The GEMMs, which inductor leaves to the
  BLAS, take ~70% of a step and the fusable GELU / norm / add ops ~12%, so nothing measurable is
  won for a compile of 1-2 minutes. ``true`` still compiles on CPU for those who measure otherwise.

Compilation is lazy: errors surface at the first step. :class:`GuardedCompute` times that step
(the compile time report), and if it fails inside Dynamo / inductor it undoes the compile, restores
the RNG state, zeroes the gradients and reruns the step eagerly, recording the reason.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

GradFn = Callable[[Any, Callable[[Tensor], None]], tuple[Tensor, dict[str, float]]]


@dataclass
class CompileReport:
    """What ``train.compile`` did (written to run.json under ``compile``)."""

    requested: str
    used: bool
    reason: str
    modules: int = 0
    block_params: int = 0
    first_step_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def toolchain_problem(device: torch.device) -> str | None:
    """Why torch.compile's default backend cannot run here; None when it can."""
    try:
        import torch._dynamo as dynamo
        import torch._inductor  # noqa: F401
    except Exception as e:  # pragma: no cover - broken installs
        return f"torch.compile is unavailable ({type(e).__name__}: {e})"
    if not dynamo.is_dynamo_supported():  # pragma: no cover - Python versions torch lacks
        return "Dynamo does not support this Python version"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "inductor needs Triton on CUDA and it is not installed"
        return None
    cxx = os.environ.get("CXX")
    if not any(shutil.which(c) for c in ([cxx] if cxx else ["g++", "c++", "clang++"])):
        return "inductor needs a C++ compiler on CPU (none of $CXX, g++, c++, clang++ is on PATH)"
    return None


def block_modules(model: nn.Module, block_types: tuple[type, ...]) -> list[nn.Module]:
    """The outermost modules of ``block_types`` under ``model`` (a block inside a block is
    compiled as part of its parent)."""
    found: list[nn.Module] = []
    inside: set[int] = set()
    for m in model.modules():
        if id(m) in inside:
            continue
        if isinstance(m, block_types):
            found.append(m)
            inside.update(id(s) for s in m.modules())
    return found


def decide(requested: bool | str, *, block_params: int, device: torch.device,
           problem: str | None) -> CompileReport:
    """The decision for ``train.compile`` (see the module docstring for the ``auto`` rule)."""
    req = "auto" if requested == "auto" else str(bool(requested)).lower()
    if req == "false":
        return CompileReport(req, False, "train.compile=false", block_params=block_params)
    if problem is not None:
        return CompileReport(req, False, f"{problem}; running eager", block_params=block_params)
    if block_params == 0:
        return CompileReport(req, False, "the model has no transformer block to compile; running eager")
    if req == "true":
        return CompileReport(req, True, "train.compile=true", block_params=block_params)
    if device.type == "cuda":
        return CompileReport(req, True, "auto: CUDA device", block_params=block_params)
    return CompileReport(req, False, "auto: eager on CPU (compiled blocks measured 0.9-1.1x eager; "
                         "train.compile=true forces it)", block_params=block_params)


def compile_blocks(blocks: list[nn.Module], **options: Any) -> None:
    """``nn.Module.compile(**options)`` in place on each block."""
    for m in blocks:
        m.compile(**options)


def undo_compile(blocks: list[nn.Module]) -> None:
    """Back to eager: ``nn.Module.compile`` keeps the compiled callable in ``_compiled_call_impl``."""
    for m in blocks:
        m._compiled_call_impl = None


def is_compile_error(e: BaseException) -> bool:
    """An error raised by Dynamo / AOTAutograd / inductor (not by the model's own code)."""
    try:
        from torch._dynamo.exc import TorchDynamoException

        if isinstance(e, TorchDynamoException):
            return True
    except ImportError:  # pragma: no cover
        pass
    sep = os.sep
    marks = (f"torch{sep}_dynamo{sep}", f"torch{sep}_inductor{sep}", f"torch{sep}_functorch{sep}")
    return any(any(m in f.filename for m in marks) for f in traceback.extract_tb(e.__traceback__))


class GuardedCompute:
    """Wrap the engine's gradient computation: time the first (compiling) call and fall back to
    eager if compilation fails there.

    ``zero_grad()`` clears gradients a failed attempt may have left; ``log(record)`` receives the
    ``{"event": "compile", ...}`` record.
    """

    def __init__(self, compute: GradFn, blocks: list[nn.Module], report: CompileReport,
                 zero_grad: Callable[[], None], log: Callable[[dict[str, Any]], None]) -> None:
        self.compute, self.blocks, self.report = compute, blocks, report
        self.zero_grad, self.log = zero_grad, log
        self.first = True

    def __call__(self, batch: Any, backward: Callable[[Tensor], None]) -> tuple[Tensor, dict[str, float]]:
        if not self.first:
            return self.compute(batch, backward)
        self.first = False
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        t0 = time.perf_counter()
        try:
            out = self.compute(batch, backward)
        except Exception as e:
            if not is_compile_error(e):
                raise
            undo_compile(self.blocks)
            root = getattr(e, "inner_exception", None) or e.__cause__ or e
            first_line = (str(root).strip().splitlines() or [""])[0][:300]
            self.report.used = False
            self.report.reason = (f"compilation failed at the first step ({type(e).__name__}: "
                                  f"{type(root).__name__}: {first_line}); running eager")
            warnings.warn(f"train.compile: {self.report.reason}", stacklevel=2)
            self.zero_grad()
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
            t0 = time.perf_counter()
            out = self.compute(batch, backward)
        self.report.first_step_seconds = time.perf_counter() - t0
        self.log({"event": "compile", **self.report.to_dict()})
        return out
