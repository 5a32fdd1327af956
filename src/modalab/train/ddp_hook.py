"""A DDP communication hook that carries the step's loss in the gradient all-reduce.

Without it a 2-process step makes one more collective after backward: the engine's all-mean of
``[loss, finite]`` (``dist.all_mean``), a point where every rank waits for the slowest one. Here
the rank's loss rides in the last gradient bucket DDP reduces, so that wait is folded into the one
DDP already has, and the engine reads the mean from the hook (:meth:`LossInBucket.mean`).

Layout of the reduced tensor (one all-reduce, SUM): ``[bucket / W ..., loss_0 .. loss_{W-1}]``.
Rank r writes its loss, rounded to float32 as the engine rounds it (``float(loss.float())``), in
slot r and zeros elsewhere; adding zeros is exact and a float32 or float64 bucket holds a float32
value exactly, so every rank reads back every rank's loss unchanged and takes the mean in float64,
as ``dist.all_mean`` does. The loss is written on its device without a host sync (no stall of a
GPU backward); the engine reads it after the backward. The gradient part is the default hook's
(``allreduce_hook``: divide by W, then sum), so gradients are those of DDP without a hook.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor


class LossInBucket:
    """Hook state: the loss of the pending backward (:meth:`arm`) and, after the backward, every
    rank's loss (:meth:`mean`)."""

    def __init__(self, rank: int, world: int, group: dist.ProcessGroup | None = None) -> None:
        self.rank, self.world, self.group = rank, world, group
        self.pending: Tensor | None = None
        self.got: Tensor | None = None  # (W,) every rank's loss, from the reduced bucket
        self.carried = False  # the last armed loss went out with the gradients

    def arm(self, loss: Tensor) -> None:
        """The scalar loss whose backward comes next (called after the forward)."""
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise TypeError(
                "train.ddp.loss_in_bucket: the step must return (scalar loss tensor, logs), got "
                f"{type(loss).__name__}{tuple(loss.shape) if isinstance(loss, Tensor) else ''}; "
                "set train.ddp.loss_in_bucket=false for this task"
            )
        self.pending, self.got, self.carried = loss, None, False

    def extra(self, dtype: torch.dtype) -> Tensor:
        """(W,) this rank's loss in its slot, zeros elsewhere (device ops only: no host sync)."""
        out = torch.zeros(self.world, dtype=dtype, device=self.pending.device)
        out[self.rank] = self.pending.detach().reshape(()).float()  # the engine's float32 value
        self.pending, self.carried = None, True
        return out

    def mean(self, values: list[float]) -> list[float]:
        """The engine's ``reduce([loss, finite])``: [mean loss over ranks, share of finite ranks].

        ``values[0]`` must be the loss this rank sent (the engine's ``float(loss.float())``).
        Where the last bucket had no room for an exact float32 (a 16-bit bucket: the same on every
        rank) the mean takes one all-reduce of its own, as ``dist.all_mean`` does."""
        if not self.carried:
            raise RuntimeError(
                "train.ddp.loss_in_bucket: no loss went out with the gradients this step (the "
                "step's backward did not go through DDP); set train.ddp.loss_in_bucket=false"
            )
        if self.got is None:  # 16-bit bucket
            t = torch.tensor(values, dtype=torch.float64)
            dist.all_reduce(t, group=self.group)
            self.carried = False
            return (t / self.world).tolist()
        vals = self.got.double().tolist()
        sent = vals[self.rank]
        if not (values[0] == sent or (math.isnan(values[0]) and math.isnan(sent))):
            raise RuntimeError(f"train.ddp.loss_in_bucket: the engine's loss {values[0]!r} is not "
                               f"the one sent with the gradients ({sent!r})")
        self.got, self.carried = None, False
        finite = [math.isfinite(v) for v in vals]
        total = math.fsum(vals) if all(finite) else math.nan  # the engine skips the step then
        return [total / self.world, sum(finite) / self.world]


def loss_in_bucket_hook(state, bucket):  # (LossInBucket, dist.GradBucket) -> Future[Tensor]
    """``allreduce_hook`` (divide by W, sum), with the armed loss appended to the last bucket.

    No annotations: DDP checks them against the real classes, which ``from __future__ import
    annotations`` turns into strings."""
    buf = bucket.buffer()
    buf.div_(state.world)
    if state.pending is None or not bucket.is_last():
        fut = dist.all_reduce(buf, group=state.group, async_op=True).get_future()
        return fut.then(lambda f: f.value()[0])
    if buf.dtype not in (torch.float32, torch.float64):  # no exact float32 slot: mean() reduces
        state.pending, state.carried = None, True
        fut = dist.all_reduce(buf, group=state.group, async_op=True).get_future()
        return fut.then(lambda f: f.value()[0])
    n = buf.numel()
    flat = torch.cat([buf, state.extra(buf.dtype)])  # (n + W,)
    fut = dist.all_reduce(flat, group=state.group, async_op=True).get_future()

    def done(f: torch.futures.Future) -> Tensor:
        t = f.value()[0]
        state.got = t[n:].clone()
        return t[:n]

    return fut.then(done)
