"""``strategy: ddp`` through ``torch.nn.parallel.DistributedDataParallel``: bucketed all-reduce
that starts while the backward pass is still running.

DDP only reduces gradients of a backward pass whose forward went through the DDP wrapper (its
``forward`` arms the reducer). Tasks call their model's methods directly (``encode_image``,
``embed_batch``), so the wrapper here holds the model and routes a *function call* through DDP:
``DataParallelStep.call(task.step, batch)`` runs ``task.step(batch)`` as the DDP module's
forward. Parameters are the model's own; nothing about the task changes.

- ``find_unused_parameters``: with ``True`` a task may leave parameters out of a step (heads used
  on some batches, GradCache's second pass that never touches the logit scale); DDP then reduces
  them from their local gradient (or zero) and leaves globally unused ones untouched (``None``),
  as a single process would, at the price of a graph walk and one more all-reduce (the used-
  parameter map) per step. ``auto`` (the recipes' default) probes the first steps and drops both
  when every parameter was used (:class:`ProbeUse`), saying why in the log either way.
- ``train.ddp.loss_in_bucket``: the loss rides in the gradient all-reduce (``train/ddp_hook.py``),
  so the engine's loss all-mean needs no collective of its own.
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

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from modalab._dist_info import world_info
from modalab.train.ddp_hook import LossInBucket, loss_in_bucket_hook


class _Call(nn.Module):
    """A module whose forward calls a function: lets DDP arm its reducer around any call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


class DataParallelStep:
    """DDP over ``model``'s trainable parameters, for calls that do not go through its forward.

    Args (``train.ddp`` in a recipe; :class:`DDPOptions`):
        find_unused: ``True``: DDP walks each step's autograd graph and all-reduces a map of the
            parameters it used (one more collective per step), so a step may leave parameters
            out. ``False``: every trainable parameter must get a gradient in every synchronised
            backward. ``"auto"``: ``True`` for the first :data:`PROBE_STEPS` steps while this
            class walks the graph itself; if every rank reached every trainable parameter in
            each of them, DDP is rebuilt with ``False`` (and ``static_graph``), else it stays and
            the reason (the parameters left out) goes to ``log``.
        static_graph: DDP's ``static_graph`` once the parameters are known to be all used.
        bucket_mb: gradient bucket size; ``None`` = DDP's default (a 1 MiB first bucket, then
            25 MiB).
        bucket_view: DDP's ``gradient_as_bucket_view``.
        batched_copy: DDP's ``batched_grad_copy`` (one copy and divide per bucket).
        loss_in_bucket: carry the loss of each :meth:`call` in the gradient all-reduce
            (``train/ddp_hook.py``); read it back with :meth:`loss_mean`.
    """

    def __init__(self, model: nn.Module, bucket_mb: float | None = 25.0, device_ids: list[int] | None = None,
                 *, find_unused: bool | str = True, static_graph: bool = False, bucket_view: bool = False,
                 batched_copy: bool = False, loss_in_bucket: bool = False,
                 log: Callable[[dict[str, Any]], None] | None = None) -> None:
        if find_unused not in (True, False, "auto"):
            raise ValueError(f"find_unused must be true, false or 'auto', got {find_unused!r}")
        self.model, self.bucket_mb, self.device_ids = model, bucket_mb, device_ids
        self.find_unused_setting, self.static_graph = find_unused, static_graph
        self.bucket_view, self.batched_copy, self.log = bucket_view, batched_copy, log
        self.loss = LossInBucket(*world_info()) if loss_in_bucket else None
        self.builds = 0
        self._build()

    def _trainable(self) -> tuple[nn.Parameter, ...]:
        return tuple(p for p in self.model.parameters() if p.requires_grad)

    def _build(self, all_used: bool = False) -> None:
        """(Re)build the wrapper; ``all_used``: the probe showed every parameter used."""
        self.params = self._trainable()
        fu = self.find_unused_setting
        self.find_unused = fu if isinstance(fu, bool) else not all_used
        self.probe = ProbeUse(self.params) if fu == "auto" and not all_used else None
        static = self.static_graph and not self.find_unused
        self.ddp = DistributedDataParallel(
            _Call(self.model), device_ids=self.device_ids, find_unused_parameters=self.find_unused,
            static_graph=static, gradient_as_bucket_view=self.bucket_view,
            **({"bucket_cap_mb": self.bucket_mb} if self.bucket_mb is not None else {}),
            **_optional_kwargs(batched_grad_copy=self.batched_copy), **_no_buffer_sync(),
        )
        if self.loss is not None:
            self.ddp.register_comm_hook(self.loss, loss_in_bucket_hook)
        self.builds += 1

    def refresh(self) -> bool:
        """Rebuild when the trainable parameters changed (a stage boundary); True if rebuilt.
        Under ``find_unused="auto"`` the new set is probed again."""
        if [id(p) for p in self._trainable()] == [id(p) for p in self.params]:
            return False
        self._build()
        return True

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` as DDP's forward: the next backward of its output reduces gradients."""
        out = self.ddp(fn, *args)
        if self.probe is not None:
            self.probe.see(out)
        if self.loss is not None:
            self.loss.arm(out[0] if isinstance(out, (tuple, list)) else out)
        return out

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *args: self.call(fn, *args)

    def no_sync(self) -> contextlib.AbstractContextManager:
        """Backward passes inside only accumulate locally."""
        return self.ddp.no_sync()

    def after_backward(self) -> None:
        """Once per optimizer step, after its last backward (every rank): ends the probe of
        ``find_unused="auto"`` and, with ``find_unused`` off, checks that every parameter got a
        gradient (a step that leaves one out would leave DDP's reduction unfinished)."""
        if self.probe is not None:
            self.probe.steps += 1
        if self.probe is not None and self.probe.steps >= PROBE_STEPS:
            missing = self.probe.missing()
            flag = torch.tensor([0.0 if missing else 1.0])
            if dist.is_initialized():
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            if flag.item() == 1.0:
                self._build(all_used=True)
                self._say({"event": "ddp", "find_unused_parameters": False, "static_graph": self.static_graph,
                           "reason": f"every trainable parameter used in each of the first {PROBE_STEPS} steps "
                                     "on every rank"})
            else:
                self.probe = None
                names = _names(self.model, missing)
                self._say({"event": "ddp", "find_unused_parameters": True,
                           "reason": "parameters left out of a step's graph" +
                                     (f" on this rank: {', '.join(names[:5])}" + (" ..." if len(names) > 5 else "")
                                      if names else " on another rank")})
        elif not self.find_unused:
            idle = [p for p in self.params if p.grad is None]
            if idle:
                raise RuntimeError(
                    f"train.ddp.find_unused_parameters=false, but this step left "
                    f"{', '.join(_names(self.model, idle)[:5])} without a gradient; set "
                    "train.ddp.find_unused_parameters=true (or auto) for this task"
                )

    def loss_mean(self, values: list[float]) -> list[float]:
        """The engine's ``reduce([loss, finite])`` from the loss the gradients carried."""
        if self.loss is None:
            raise RuntimeError("loss_mean needs DataParallelStep(loss_in_bucket=True)")
        return self.loss.mean(values)

    def _say(self, rec: dict[str, Any]) -> None:
        self.decision = rec
        if self.log is not None:
            self.log(rec)

    def uncovered(self, params: list[nn.Parameter]) -> list[nn.Parameter]:
        """Parameters DDP does not reduce (none after :meth:`refresh`)."""
        mine = {id(p) for p in self.params}
        return [p for p in params if id(p) not in mine]


PROBE_STEPS = 2  # find_unused="auto": steps that must use every parameter before DDP stops looking


class ProbeUse:
    """Which of ``params`` each call's output reaches through its autograd graph (what DDP's
    ``find_unused_parameters`` looks for, walked once per probed call)."""

    def __init__(self, params: tuple[nn.Parameter, ...]) -> None:
        self.params, self.steps = params, 0
        self.left: set[int] = set()  # ids of parameters some call did not reach

    def see(self, out: Any) -> None:
        reached = reached_parameters(out)
        self.left |= {id(p) for p in self.params if id(p) not in reached}

    def missing(self) -> list[nn.Parameter]:
        return [p for p in self.params if id(p) in self.left]


def reached_parameters(out: Any) -> set[int]:
    """ids of the leaf tensors (parameters) whose gradients a backward from ``out``'s tensors
    (nested in tuples, lists and dicts) would accumulate."""
    stack, seen, leaves = [], set(), set()
    todo = [out]
    while todo:
        o = todo.pop()
        if isinstance(o, torch.Tensor):
            if o.grad_fn is not None:
                stack.append(o.grad_fn)
            elif o.requires_grad:
                leaves.add(id(o))
        elif isinstance(o, (tuple, list)):
            todo.extend(o)
        elif isinstance(o, dict):
            todo.extend(o.values())
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)  # AccumulateGrad
        if var is not None:
            leaves.add(id(var))
        stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return leaves


def _names(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    ids = {id(p) for p in params}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def _optional_kwargs(**kw: Any) -> dict[str, Any]:
    """Keyword arguments this torch's DistributedDataParallel accepts; a ``True`` one it does not
    know is an error, a ``False`` one is dropped."""
    names = inspect.signature(DistributedDataParallel.__init__).parameters
    for k, v in kw.items():
        if v and k not in names:
            raise RuntimeError(f"this torch's DistributedDataParallel has no {k}; set it false")
    return {k: v for k, v in kw.items() if k in names}


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
