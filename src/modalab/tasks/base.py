"""The task contract, declared once: what ``experiment/runner.py`` may call on a task.

A task is built by a ``@register("task", name)`` builder taking ``(recipe, run)``; it composes
components (data, model, loss, evaluation) and never imports the runner. The runner drives it:

    model                      the module trained (moved to the device, wrapped for DDP/FSDP)
    train_loader()             an iterable of batches (the runner shards and resumes it)
    step(batch)                -> (loss, logs) for one optimiser step
    after_step(step)           -> logs; step-dependent task state (schedules, curricula)
    evaluate(final)            -> results (``final=False``: periodic validation); a task whose
                                  ``evaluate`` also takes ``split`` ("val" | "test") is evaluated on
                                  its validation split during training and at the end
                                  (``experiment/eval_splits.py``), on test once
    counts()                   -> sizes and skip counts reported in results.json
    state()                    -> JSON-able state saved with each checkpoint
    extra_modules()            -> further modules saved with the weights (name -> module)

Optional hooks, each a Protocol of its own; the runner checks them with ``implements`` (which, unlike
``isinstance`` on a runtime-checkable Protocol, does not cache the answer per class):

    Resumable.load_state(state)                          restores what ``state()`` returned
    ExactAccumulation.embed_batch / loss_from_embeddings exact GradCache accumulation
                                                         (declared in ``train/gradcache.py``)
    TwoOptimizers.second_optimizer()                     a ``train.engine.SecondOptimizer`` (a GAN
                                                         discriminator) the engine steps after
                                                         the main step, or None
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, runtime_checkable

from torch import Tensor, nn

from modalab.train.engine import SecondOptimizer
from modalab.train.gradcache import ExactAccumulation

__all__ = ["ExactAccumulation", "Prerequisite", "Resumable", "Task", "TwoOptimizers", "implements",
           "missing_members"]


@runtime_checkable
class Task(Protocol):
    """The hooks every task implements (see the module docstring)."""

    model: nn.Module

    def train_loader(self) -> Iterable[Any]: ...

    def step(self, batch: Any) -> tuple[Tensor, dict[str, float]]: ...

    def after_step(self, step: int) -> dict[str, float]: ...

    def evaluate(self, final: bool = True) -> dict[str, Any]: ...

    def counts(self) -> dict[str, Any]: ...

    def state(self) -> dict[str, Any]: ...

    def extra_modules(self) -> dict[str, nn.Module]: ...


@runtime_checkable
class Resumable(Protocol):
    """A task whose own state (beyond weights and trainer) is restored on ``--resume``."""

    def load_state(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class TwoOptimizers(Protocol):
    """A task that trains a second set of parameters with its own optimiser (a discriminator);
    every optimiser step still goes through ``train/engine.fit``."""

    def second_optimizer(self) -> SecondOptimizer | None: ...


@dataclass(frozen=True)
class Prerequisite:
    """An earlier run a task needs: ``modalab run`` trains ``recipe`` first (cached by content under
    ``cache_dir/<prefix>-<hash>``) and writes its run directory into the recipe key ``key``.

    A task module declares them with ``@register("prerequisites", task_name)`` on a function
    ``(recipe) -> list[Prerequisite]`` (empty when the key is already set); the task itself only
    reads ``key`` and fails with a clear error when it is unset.
    """

    key: str  # dotted recipe key, e.g. "model.encoder.checkpoint"
    recipe: dict[str, Any]  # the raw recipe of the earlier run
    cache_dir: Path
    prefix: str  # run directory name prefix, e.g. "clip"


def missing_members(obj: Any, protocol: type = Task) -> list[str]:
    """The members of ``protocol`` that ``obj`` (an instance or a class) lacks, sorted.

    On a class, instance attributes declared only by annotation (``model``) are not checked.
    """
    names = sorted(getattr(protocol, "__protocol_attrs__", None) or _protocol_attrs(protocol))
    if isinstance(obj, type):
        names = [n for n in names if callable(getattr(protocol, n, None))]
    return [n for n in names if not hasattr(obj, n)
            or (callable(getattr(protocol, n, None)) and not callable(getattr(obj, n)))]


def implements(obj: Any, protocol: type) -> bool:
    """True when ``obj`` has every member of ``protocol`` (methods callable)."""
    return not missing_members(obj, protocol)


def _protocol_attrs(protocol: type) -> set[str]:
    """Protocol members on Pythons without ``__protocol_attrs__`` (before 3.12)."""
    out: set[str] = set()
    for base in protocol.__mro__[:-1]:
        if base.__name__ in ("Protocol", "Generic"):
            continue
        out |= {k for k in vars(base) if not k.startswith("_")}
        out |= set(getattr(base, "__annotations__", {}))
    return out


def split_counts(data: Any) -> dict[str, int]:
    """``num_train`` / ``num_val`` / ``num_test`` of a task's splits (``data.val`` may be None)."""
    return {"num_train": len(data.train), "num_val": 0 if data.val is None else len(data.val),
            "num_test": len(data.test)}
