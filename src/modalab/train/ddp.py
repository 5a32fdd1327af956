"""``strategy: ddp`` through ``torch.nn.parallel.DistributedDataParallel``: bucketed all-reduce
that starts while the backward pass is still running.

DDP only reduces gradients of a backward pass whose forward went through the DDP wrapper (its
``forward`` arms the reducer). Tasks call their model's methods directly (``encode_image``,
``embed_batch``), so the wrapper here holds the model and routes a *function call* through DDP:
``DataParallelStep.call(task.step, batch)`` runs ``task.step(batch)`` as the DDP module's
forward. Parameters are the model's own; nothing about the task changes.

- ``find_unused_parameters=True``: a task may leave parameters out of a step (stages, heads used
  on some batches, GradCache's second pass that never touches the logit scale); DDP then reduces
  them from their local gradient (or zero) and leaves globally unused ones untouched (``None``),
  as a single process would.
- no buffer synchronisation (``init_sync`` / ``forward_sync_buffers`` off): buffers (queues, EMA
  codebooks) keep today's per-rank semantics; the runner broadcast rank 0's start once.
- Gradient accumulation (naive or GradCache) runs every backward pass but the last under
  :meth:`no_sync`; the last one, routed through :meth:`call`, reduces the accumulated gradients
  once, overlapping its own backward.
- Stages change ``requires_grad``; DDP fixes its parameter set at construction, so
  :meth:`refresh` rebuilds the wrapper when the trainable set changed (every rank, same step).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable

from torch import nn
from torch.nn.parallel import DistributedDataParallel


class _Call(nn.Module):
    """A module whose forward calls a function: lets DDP arm its reducer around any call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


class DataParallelStep:
    """DDP over ``model``'s trainable parameters, for calls that do not go through its forward."""

    def __init__(self, model: nn.Module, bucket_mb: float = 25.0, device_ids: list[int] | None = None) -> None:
        self.model, self.bucket_mb, self.device_ids = model, bucket_mb, device_ids
        self.builds = 0
        self._build()

    def _trainable(self) -> tuple[nn.Parameter, ...]:
        return tuple(p for p in self.model.parameters() if p.requires_grad)

    def _build(self) -> None:
        self.params = self._trainable()
        self.ddp = DistributedDataParallel(
            _Call(self.model), device_ids=self.device_ids, find_unused_parameters=True,
            bucket_cap_mb=self.bucket_mb, **_no_buffer_sync(),
        )
        self.builds += 1

    def refresh(self) -> bool:
        """Rebuild when the trainable parameters changed (a stage boundary); True if rebuilt."""
        if [id(p) for p in self._trainable()] == [id(p) for p in self.params]:
            return False
        self._build()
        return True

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` as DDP's forward: the next backward of its output reduces gradients."""
        return self.ddp(fn, *args)

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *args: self.call(fn, *args)

    def no_sync(self) -> contextlib.AbstractContextManager:
        """Backward passes inside only accumulate locally."""
        return self.ddp.no_sync()

    def uncovered(self, params: list[nn.Parameter]) -> list[nn.Parameter]:
        """Parameters DDP does not reduce (none after :meth:`refresh`)."""
        mine = {id(p) for p in self.params}
        return [p for p in params if id(p) not in mine]


def _no_buffer_sync() -> dict[str, bool]:
    """Neither sync buffers at construction (the runner broadcast rank 0's state once; a rebuild at
    a stage boundary must not overwrite per-rank buffers) nor before each forward. torch >= 2.13
    spells this ``init_sync`` / ``forward_sync_buffers`` (``broadcast_buffers`` is deprecated)."""
    names = inspect.signature(DistributedDataParallel.__init__).parameters
    if "forward_sync_buffers" in names and "init_sync" in names:
        return {"init_sync": False, "forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class LocalStep:
    """The single-process stand-in: direct calls, no synchronisation."""

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def no_sync(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


def grad_context(sync: Any, last: bool) -> contextlib.AbstractContextManager:
    """``no_sync`` for every backward pass of a step but the last."""
    return contextlib.nullcontext() if last else sync.no_sync()
