"""Optimizers, parameter groups and learning-rate schedules.

Parameter groups: parameters whose name matches a glob pattern get that group's learning rate and
weight decay (first matching pattern wins); norms, biases, embeddings' position/class tokens and
the logit scale/bias never get weight decay (open_clip's exclusion rule: ``ndim < 2`` or a name
containing ``logit_scale``/``logit_bias``/``pos_embed``/``cls_token``).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

NO_DECAY_KEYS = ("logit_scale", "logit_bias", "pos_embed", "cls_token", "token_embed")


@dataclass(frozen=True)
class GroupRule:
    pattern: str
    lr: float | None = None
    weight_decay: float | None = None


def no_weight_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim < 2 or any(k in name for k in NO_DECAY_KEYS)


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, rules: Sequence[GroupRule] = ()
) -> list[dict]:
    """Split trainable parameters into optimizer groups by rule and by decay eligibility.

    Each group carries ``name`` (rule pattern or ``default``), ``lr``, ``weight_decay`` and
    ``base_lr`` (the schedule multiplies ``base_lr``). A rule that matches no parameter is an error.
    """
    buckets: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    used = {r.pattern: 0 for r in rules}
    settings: dict[str, tuple[float, float]] = {"default": (lr, weight_decay)}
    for r in rules:
        settings[r.pattern] = (
            r.lr if r.lr is not None else lr,
            r.weight_decay if r.weight_decay is not None else weight_decay,
        )
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group = next((r.pattern for r in rules if fnmatch.fnmatchcase(name, r.pattern)), "default")
        if group != "default":
            used[group] += 1
        buckets.setdefault((group, no_weight_decay(name, p)), []).append(p)
    unused = [k for k, v in used.items() if v == 0]
    if unused:
        names = [n for n, _ in model.named_parameters()][:8]
        raise ValueError(
            f"optim.param_groups pattern {unused[0]!r} matches no trainable parameter; "
            f"parameter names look like: {', '.join(names)}"
        )
    groups = []
    for (group, no_decay), params in sorted(buckets.items()):
        g_lr, g_wd = settings[group]
        groups.append(
            {
                "params": params,
                "name": group + ("/no_decay" if no_decay else ""),
                "lr": g_lr,
                "base_lr": g_lr,
                "weight_decay": 0.0 if no_decay else g_wd,
            }
        )
    return groups


def build_optimizer(
    name: str,
    groups: list[dict],
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    momentum: float = 0.9,
    fused: bool = False,
) -> torch.optim.Optimizer:
    if name == "adamw":
        if fused:  # one kernel per dtype/device group; equal to foreach within float rounding only
            return torch.optim.AdamW(groups, betas=betas, eps=eps, fused=True)
        # the multi-tensor (foreach) update: torch picks it only for CUDA tensors; on CPU it gives
        # the same parameters, bit for bit (tests/train/test_optim_foreach.py), in fewer kernel calls
        return torch.optim.AdamW(groups, betas=betas, eps=eps, foreach=True)
    if fused:
        raise ValueError(f"optim.fused=true is only implemented for adamw (got optimizer '{name}'); "
                         f"set optim.fused: false")
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=momentum)
    raise ValueError(f"unknown optimizer '{name}'; expected 'adamw' or 'sgd'")


def lr_multiplier(
    step: int, total: int, warmup: int, schedule: str = "cosine", min_ratio: float = 0.0
) -> float:
    """Multiplier of the base LR at ``step`` (0-based): linear warm-up, then the schedule."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return min_ratio + (1 - min_ratio) * (1 - progress)
    raise ValueError(f"unknown schedule '{schedule}'; expected cosine, linear or constant")


def set_lr(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * multiplier


def grad_norm(params: Iterable[torch.nn.Parameter]) -> float:
    """Global L2 norm of the gradients; FSDP-sharded (DTensor) gradients are summed over ranks.

    The per-tensor norms come from one ``torch._foreach_norm`` call (bit for bit the norms of a
    loop over ``g.norm()``, tests/train/test_grad_norm_foreach.py): the loop's per-tensor dispatch
    is a fixed cost of every step, which a data-parallel rank pays in full on half the batch.
    """
    local, sharded = [], []
    for p in params:
        if p.grad is None:
            continue
        g = p.grad.detach()
        if type(g).__name__ == "DTensor":
            sharded.append(g.to_local().float().pow(2).sum())
        else:
            local.append(g.float())
    total = torch.stack(_norms(local)).norm().pow(2) if local else torch.zeros(())
    if sharded:
        import torch.distributed as dist

        sq = torch.stack(sharded).sum()
        dist.all_reduce(sq)
        total = total.to(sq.device) + sq
    return total.sqrt().item()


def _norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-tensor L2 norms: one fused call when all live on one device, else a loop."""
    if len({t.device for t in tensors}) == 1:
        return list(torch._foreach_norm(tensors))
    return [t.norm() for t in tensors]


@torch.no_grad()
def clip_gradients(params: Iterable[torch.nn.Parameter], max_norm: float, total_norm: float) -> None:
    """Scale gradients so their global norm is at most ``max_norm`` (as ``clip_grad_norm_``)."""
    coef = max_norm / (total_norm + 1e-6)
    if coef < 1.0:
        grads = [p.grad for p in params if p.grad is not None]
        # float32 only: there the fused multiply gives the loop's bits (bf16 rounds differently)
        plain = [g for g in grads if type(g).__name__ != "DTensor" and g.dtype == torch.float32]
        if len({g.device for g in plain}) != 1:
            plain = []
        if plain:
            torch._foreach_mul_(plain, coef)
        fused = {id(g) for g in plain}
        for g in grads:
            if id(g) not in fused:
                g.mul_(coef)
