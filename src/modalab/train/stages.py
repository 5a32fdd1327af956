"""Training stages: which parameters train, and at which learning rates, step by step.

The chapter's recipe for encoder-decoder models (5.2.1) is "train the connector with the encoder
frozen, then unfreeze and train everything with per-module learning rates". A stage list says it
in one recipe::

    train:
      stages:
        - {steps: 500, trainable: ["connector.*"], lr: {"connector.*": 1.0e-4}}
        - {steps: 1500, trainable: ["*"], lr: {"encoder.*": 1.0e-5, "connector.*": 1.0e-4}}

At a boundary the trainable flags are set from the patterns and the optimizer is rebuilt from
the new parameter groups; the Adam moments of parameters that stay trainable are carried over.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class Stage:
    steps: int
    trainable: tuple[str, ...] = ("*",)
    lr: dict[str, float] = field(default_factory=dict)
    name: str | None = None


def stage_index(stages: Sequence[Stage], step: int) -> int:
    """Index of the stage that holds 0-based ``step`` (the last stage runs on past its end)."""
    end = 0
    for i, s in enumerate(stages):
        end += s.steps
        if step < end:
            return i
    return len(stages) - 1


def set_trainable(model: nn.Module, patterns: Sequence[str]) -> int:
    """``requires_grad`` = name matches one of ``patterns``; returns the trainable count.

    A pattern matching no parameter is an error naming it and a few parameter names.
    """
    names = [n for n, _ in model.named_parameters()]
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            raise ValueError(
                f"train.stages trainable pattern {pat!r} matches no parameter; parameter names "
                f"look like: {', '.join(names[:8])}"
            )
    count = 0
    for n, p in model.named_parameters():
        p.requires_grad_(any(fnmatch.fnmatchcase(n, pat) for pat in patterns))
        count += p.numel() if p.requires_grad else 0
    return count


def rebuild_optimizer(
    old: torch.optim.Optimizer | None, make: Callable[[], torch.optim.Optimizer]
) -> torch.optim.Optimizer:
    """A new optimizer from ``make()``; per-parameter state of parameters kept is carried over."""
    new = make()
    if old is not None:
        kept = {p for g in new.param_groups for p in g["params"]}
        for p, st in old.state.items():
            if p in kept:
                new.state[p] = st
    return new
