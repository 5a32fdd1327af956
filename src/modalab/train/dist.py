"""Multi-process training on PyTorch's own stack: torchrun starts the processes, this file joins
them (gloo on CPU, NCCL on GPU) and keeps their gradients in step.

- ``init_distributed()`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``);
  without it the run is a single process and nothing here does any communication.
- ``strategy: ddp`` — every process holds the full model; ``train/ddp.py`` routes the task's
  step through ``DistributedDataParallel`` (bucketed all-reduce overlapping the backward pass).
  ``average_gradients`` remains for replicated parameters outside DDP (FSDP's scalars).
- ``strategy: fsdp`` — FSDP2 ``fully_shard`` on every transformer block (every class registered with
  ``layers.register_block``: ``layers.Block`` and its users, the video, fusion and expert blocks) and
  on each child of the root module (``shard_model``); gradients are reduce-scattered by FSDP itself.
- ``torchrun_command()`` builds the ``python -m torch.distributed.run`` command that
  ``modalab run RECIPE --nproc N`` executes.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(want: str, local_rank: int) -> torch.device:
    """``auto``: cuda:<local_rank> when CUDA is available, else cpu."""
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but CUDA is not available; use train.device=cpu")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group torchrun prepared (no-op for a plain single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world <= 1:
        return DistEnv(device=dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=dt.timedelta(minutes=30))
    return DistEnv(dist.get_rank(), dist.get_world_size(), local, dev)


def shutdown(sync: bool = True) -> None:
    """Leave the process group.

    With ``sync`` (a clean exit) it first waits for every rank; then it frees what still holds the
    group (a DistributedDataParallel reducer, gloo work objects) before destroying it. A rank that
    tears gloo down while a peer still uses its connections, or that leaves those objects to
    interpreter shutdown, can abort the peer with "terminate called without an active exception".
    On an error path pass ``sync=False``: a barrier there could wait on a rank that never arrives.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if sync and dist.get_world_size() > 1:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def broadcast_object(obj: object, env: DistEnv) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: object, env: DistEnv) -> list[object]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not env.enabled:
        return [obj]
    out: list[object] = [None] * env.world
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def broadcast_parameters(model: nn.Module, env: DistEnv) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if not env.enabled:
        return
    for t in [*model.parameters(), *model.buffers()]:
        dist.broadcast(t.data, src=0)


@torch.no_grad()
def average_gradients(params: list[nn.Parameter], env: DistEnv, bucket_mb: float = 25.0) -> None:
    """Average ``.grad`` over ranks in flat buckets (a missing grad counts as zero).

    Every rank must pass the same parameter list (same order, same ``requires_grad``).
    """
    if not env.enabled:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    limit = int(bucket_mb * 2**20)
    bucket: list[nn.Parameter] = []
    size = 0
    for p in [*params, None]:
        if p is not None:
            bucket.append(p)
            size += p.numel() * p.element_size()
        if bucket and (p is None or size >= limit):
            flat = torch.cat([q.grad.reshape(-1) for q in bucket])  # (sum numel,)
            dist.all_reduce(flat)
            flat /= env.world
            off = 0
            for q in bucket:
                q.grad.copy_(flat[off : off + q.numel()].view_as(q.grad))
                off += q.numel()
            bucket, size = [], 0


def all_mean(values: list[float], env: DistEnv) -> list[float]:
    """Mean over ranks of a few scalars (one all_reduce)."""
    if not env.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / env.world).tolist()


def shard_model(model: nn.Module, block_types: tuple[type, ...]) -> nn.Module:
    """FSDP2 ``fully_shard`` (in place) on each block of ``block_types`` (``layers.block_types()``),
    then on each direct child of the root (the members of a ``ModuleList`` / ``ModuleDict`` child,
    which has no forward of its own). The root itself stays unsharded, so a task may call its
    submodules directly (``encode_image``); its own parameters (scalars such as the logit scale,
    which FSDP2 cannot shard) stay replicated: average their gradients with
    :func:`average_gradients`.
    """
    try:
        from torch.distributed.fsdp import FSDPModule, fully_shard
    except ImportError as e:  # pragma: no cover - torch < 2.6
        raise RuntimeError("train.strategy=fsdp needs torch.distributed.fsdp.fully_shard (torch >= 2.6)") from e
    scalars = {p for p in model.parameters() if p.ndim == 0}
    for m in model.modules():
        if isinstance(m, block_types):
            fully_shard(m, ignored_params=scalars)

    def units(parent: nn.Module):
        for child in parent.children():
            if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
                yield from units(child)
            elif not isinstance(child, FSDPModule) and any(True for _ in child.parameters()):
                yield child

    for child in list(units(model)):
        fully_shard(child, ignored_params=scalars)
    return model


def is_sharded(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor"


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor shard (a collective: every rank must call it); others as is."""
    return t.full_tensor() if is_sharded(t) else t


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """``python -m torch.distributed.run --nproc-per-node N -m modalab <argv>`` (standalone rendezvous)."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "modalab", *argv,
    ]


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts on CPU for rank 0 (empty on the others); a
    collective under FSDP. The optimizer state is keyed by parameter name, so it loads into any
    process count (:func:`load_full_state`)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, optimizer, options=opts)


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, weights: dict,
                    optim_state: dict | None) -> None:
    """Load what :func:`full_state` returned into a (sharded) model and its optimizer; every rank
    passes the full dicts and keeps its own shard."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, set_model_state_dict, set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=opts)
    if optimizer is not None and optim_state is not None:
        set_optimizer_state_dict(model, optimizer, optim_state, options=opts)
