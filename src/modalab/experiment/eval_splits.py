"""Which held-out split a task is evaluated on, and how results.json names the metrics.

During training (``train.eval_every``) a task that can evaluate its validation split logs ``val_*``
metrics; one that cannot (no ``split`` argument to ``evaluate``, or a source without val) logs
``test_*``, named for what they are. At the end ``results.json`` holds the test metrics under their
plain names (as before) and as ``test_*``, the final ``val_*`` metrics, and ``eval_splits``.
"""

from __future__ import annotations

import inspect
from typing import Any


def eval_split(task: Any, split: str) -> dict[str, Any] | None:
    """``{split}_{key}`` metrics of ``task`` on a held-out split, or None when the task cannot
    evaluate that split (no ``split`` argument, or its data has no such split)."""
    data = getattr(task, "data", None)
    if "split" not in inspect.signature(task.evaluate).parameters or getattr(data, split, None) is None:
        return None
    return {f"{split}_{k}": v for k, v in task.evaluate(final=False, split=split).items()}


def split_keys(test: dict[str, Any], val: dict[str, Any] | None) -> dict[str, Any]:
    """``test_*`` aliases of the final (test) metrics, the ``val_*`` metrics, and which splits exist.

    The unprefixed keys stay the test values (older results stay comparable); ``eval_splits`` says
    whether this run has validation metrics at all.
    """
    out: dict[str, Any] = {f"test_{k}": v for k, v in test.items() if isinstance(v, (int, float))}
    out.update({k: v for k, v in (val or {}).items() if isinstance(v, (int, float))})
    out["eval_splits"] = ["val", "test"] if val else ["test"]
    return out
