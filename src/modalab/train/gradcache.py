"""Large effective batches from micro-batches: exact (GradCache) or naive accumulation.

**Exact** (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup"): a contrastive loss couples every pair in the batch, so summing per-micro-batch losses
changes the negatives. GradCache instead

1. embeds every micro-batch without a graph (remembering each one's RNG state),
2. computes the loss once on the concatenated embeddings and back-propagates it to them (and to
   parameters the loss uses directly, e.g. the logit scale),
3. re-runs each micro-batch with a graph under its saved RNG state and back-propagates the cached
   embedding gradients (``sum(emb * grad)``).

The parameter gradients equal those of one step on the whole batch (up to float summation
order); activation memory is that of one micro-batch. A task opts in with two methods::

    embed_batch(batch) -> Tensor | tuple[Tensor, ...] | dict[str, Tensor]   # (B, ...) each
    loss_from_embeddings(embeddings, batch) -> (loss, logs)                 # same structure, full B

**Naive**: ``loss_i / n`` per micro-batch, back-propagated one by one. Exact for losses that are
a mean over independent samples; for contrastive losses each micro-batch only sees its own
negatives (B/n - 1 instead of B - 1), which is a different, weaker objective.

Across processes (``sync``, a ``train.ddp.DataParallelStep``): every backward pass but the last
runs under ``sync.no_sync()``; the last one's forward goes through ``sync.call`` so DDP reduces
the accumulated gradients once, overlapping that backward pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from modalab.train.ddp import LocalStep, grad_context

Backward = Callable[[Tensor], None]


@runtime_checkable
class ExactAccumulation(Protocol):
    """A task that splits its step into embedding and loss, as exact (GradCache) accumulation needs."""

    def embed_batch(self, batch: Any) -> Any: ...

    def loss_from_embeddings(self, emb: Any, batch: Any) -> tuple[Tensor, dict[str, float]]: ...


def supports_exact(task: Any) -> bool:
    """Whether ``task`` implements :class:`ExactAccumulation` (checked on every call: ``isinstance``
    on a runtime-checkable Protocol caches per class, which a test that removes a hook defeats)."""
    return all(callable(getattr(task, n, None)) for n in ("embed_batch", "loss_from_embeddings"))


def split_batch(batch: Any, n: int) -> list[Any]:
    """Split a batch into ``n`` equal micro-batches along dim 0 of every tensor / list field.

    Works for dataclasses (``data.sample.Batch``), dicts, tuples and tensors; fields whose
    leading size is not the batch size (e.g. a shared mask) are passed to every micro-batch. A batch
    with a ``micro_batches(n)`` method splits itself (e.g. packed images, which must be re-packed so
    that a micro-batch encodes only its own images: ``tasks/varres.VarResBatch``).
    """
    size = _batch_len(batch)
    if size % n:
        raise ValueError(
            f"train.accum_steps={n} does not divide the per-process batch of {size}; pick "
            f"train.batch_size divisible by (processes x accum_steps)"
        )
    if callable(getattr(batch, "micro_batches", None)):
        return list(batch.micro_batches(n))
    m = size // n
    return [_slice(batch, i * m, (i + 1) * m, size) for i in range(n)]


def _batch_len(batch: Any) -> int:
    if hasattr(batch, "__len__") and not isinstance(batch, (dict, tuple, list, Tensor)):
        return len(batch)
    if isinstance(batch, Tensor):
        return batch.shape[0]
    items = batch.values() if isinstance(batch, dict) else batch
    for v in items:
        if isinstance(v, Tensor) and v.ndim:
            return v.shape[0]
    raise ValueError(f"cannot tell the batch size of a {type(batch).__name__}")


def _slice(x: Any, a: int, b: int, size: int) -> Any:
    if isinstance(x, Tensor):
        return x[a:b] if x.ndim and x.shape[0] == size else x
    if isinstance(x, list):
        return x[a:b] if len(x) == size else x
    if isinstance(x, tuple):
        return tuple(_slice(v, a, b, size) for v in x)
    if isinstance(x, dict):
        return {k: _slice(v, a, b, size) for k, v in x.items()}
    if dataclasses.is_dataclass(x):
        return dataclasses.replace(
            x, **{f.name: _slice(getattr(x, f.name), a, b, size) for f in dataclasses.fields(x)}
        )
    return x


def naive_accumulate(
    step_fn: Callable[[Any], tuple[Tensor, dict]], micro: Sequence[Any], backward: Backward,
    amp: Callable[[], Any], sync: Any = None,
) -> tuple[Tensor, dict]:
    """Back-propagate ``loss_i / n`` for each micro-batch; returns (mean loss, last logs)."""
    sync = sync or LocalStep()
    total, logs = torch.zeros(()), {}
    for i, mb in enumerate(micro):
        with grad_context(sync, last=i == len(micro) - 1):
            with amp():
                loss, logs = sync.call(step_fn, mb)
            backward(loss / len(micro))
        total = total + loss.detach().float().cpu()
    return total / len(micro), logs


def _flatten(reps: Any) -> tuple[list[Tensor], Callable[[list[Tensor]], Any]]:
    if isinstance(reps, Tensor):
        return [reps], lambda xs: xs[0]
    if isinstance(reps, dict):
        keys = list(reps)
        return [reps[k] for k in keys], lambda xs: dict(zip(keys, xs))
    if isinstance(reps, (tuple, list)):
        return list(reps), lambda xs: tuple(xs)
    raise TypeError(f"embed_batch must return a Tensor, tuple or dict of tensors, got {type(reps).__name__}")


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def gradcache_accumulate(
    embed_fn: Callable[[Any], Any], loss_fn: Callable[[Any, Any], tuple[Tensor, dict]],
    batch: Any, micro: Sequence[Any], backward: Backward, amp: Callable[[], Any],
    device: torch.device, sync: Any = None,
) -> tuple[Tensor, dict]:
    """One exact large-batch backward from micro-batches; returns (loss, logs) of the full batch.

    ``backward(t)`` back-propagates a scalar (scaling it for fp16 when needed); the cached
    embedding gradients then carry that scale into the second pass.
    """
    sync = sync or LocalStep()
    # 1. embed every micro-batch without a graph, remembering the RNG state it started from
    states, parts, rebuild = [], [], None
    with torch.no_grad():
        for mb in micro:
            states.append(_rng_state(device))
            with amp():
                flat, rebuild = _flatten(embed_fn(mb))
            parts.append(flat)
    after = _rng_state(device)
    # 2. the loss of the whole batch on the cached embeddings; keep d loss / d embedding
    cached = []
    for k in range(len(parts[0])):
        full = torch.cat([p[k] for p in parts])  # (B, ...) from n x (B/n, ...)
        cached.append(full.detach().requires_grad_(full.is_floating_point()))
    with sync.no_sync():
        with amp():
            loss, logs = loss_fn(rebuild(cached), batch)
        backward(loss)
    sizes = [p[0].shape[0] for p in parts]
    grads = [c.grad.split(sizes) if c.grad is not None else None for c in cached]
    # 3. re-run each micro-batch with a graph (same RNG: same dropout / masking) and push the
    #    cached gradients through it
    for j, mb in enumerate(micro):
        _set_rng(states[j], device)
        with grad_context(sync, last=j == len(micro) - 1):
            with amp():
                reps, _ = _flatten(sync.call(embed_fn, mb))
            terms = [(r * g[j].to(r.dtype)).sum() for r, g in zip(reps, grads) if g is not None]
            if terms:
                torch.stack([t.float() for t in terms]).sum().backward()
    _set_rng(after, device)
    return loss.detach().float().cpu(), logs
