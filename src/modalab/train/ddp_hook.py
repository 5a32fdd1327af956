"""A DDP communication hook that carries the step's loss in the gradient all-reduce.

Without it a 2-process step makes one more collective after backward: the engine's all-mean of
``[loss, finite]`` (``dist.all_mean``), a point where every rank waits for the slowest one. Here
the rank's loss rides in the last gradient bucket DDP reduces, so that wait is folded into the one
DDP already has, and the engine reads the mean from the hook (:meth:`LossInBucket.mean`).

Layout of the reduced tensor (one all-reduce, SUM): ``[bucket / W ..., hi_0 .. hi_{W-1},
lo_0 .. lo_{W-1}]``. Rank r writes its loss in slot r as ``hi = float32(v)``, ``lo = v - hi``
(so a float64 loss survives a float32 bucket to ~1e-14) and zeros elsewhere; adding zeros is
exact, so every rank reads back every rank's loss unchanged and takes the mean in float64, as
``dist.all_mean`` does. The gradient part is the default hook's (``allreduce_hook``: divide by
W, then sum), so gradients are those of DDP without a hook.
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
        self.sent: float | None = None
        self.values: list[float] | None = None

    def arm(self, loss: Tensor) -> None:
        """The scalar loss whose backward comes next (called after the forward)."""
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise TypeError(
                "train.ddp.loss_in_bucket: the step must return (scalar loss tensor, logs), got "
                f"{type(loss).__name__}{tuple(loss.shape) if isinstance(loss, Tensor) else ''}; "
                "set train.ddp.loss_in_bucket=false for this task"
            )
        self.pending, self.values = loss, None

    def extra(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """(2W,) this rank's slots: hi and lo of its loss, zeros elsewhere."""
        v = float(self.pending.detach().float()) if self.pending.dtype != torch.float64 \
            else float(self.pending.detach())
        self.pending, self.sent = None, v
        hi = float(torch.tensor(v, dtype=torch.float32))
        lo = v - hi if math.isfinite(v) else 0.0
        out = torch.zeros(2 * self.world, dtype=dtype, device=device)
        out[self.rank], out[self.world + self.rank] = hi, lo
        return out

    def receive(self, t: Tensor) -> None:
        t = t.double().tolist()
        w = self.world
        self.values = [h + lo for h, lo in zip(t[:w], t[w:])]

    def mean(self, values: list[float]) -> list[float]:
        """The engine's ``reduce([loss, finite])``: [mean loss over ranks, share of finite ranks].

        ``values[0]`` must be the loss this rank sent (the engine's ``float(loss)``)."""
        if self.values is None:
            raise RuntimeError(
                "train.ddp.loss_in_bucket: no loss came back with the gradients this step (the "
                "step's backward did not go through DDP); set train.ddp.loss_in_bucket=false"
            )
        same = values[0] == self.sent or (math.isnan(values[0]) and math.isnan(self.sent or 0.0))
        if not same:
            raise RuntimeError(f"train.ddp.loss_in_bucket: the engine's loss {values[0]!r} is not "
                               f"the one sent with the gradients ({self.sent!r})")
        vals, self.values = self.values, None
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
    n = buf.numel()
    flat = torch.cat([buf, state.extra(buf.dtype, buf.device)])  # (n + 2W,)
    fut = dist.all_reduce(flat, group=state.group, async_op=True).get_future()

    def done(f: torch.futures.Future) -> Tensor:
        t = f.value()[0]
        state.receive(t[n:])
        return t[:n]

    return fut.then(done)
