"""Earlier runs a recipe needs, run before it: the experiment layer's half of ``Prerequisite``.

A task module declares what it needs with ``@register("prerequisites", task)`` (see
``tasks/base.py``); ``resolve`` runs each declared recipe once, caches the run directory under
``<cache_dir>/<prefix>-<hash of the recipe>`` (a finished run there is reused), and returns the
recipe with the declared key set to that directory. Tasks never call the runner themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from modalab import registry
from modalab.config import Recipe, from_dict
from modalab.tasks.base import Prerequisite

RunFn = Callable[[Recipe, Path], Path]


def content_key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def declared(recipe: Recipe) -> list[Prerequisite]:
    """The prerequisites the recipe's task declares for this recipe (none for most tasks)."""
    if recipe.task not in registry.names("prerequisites"):
        return []
    return list(registry.build("prerequisites", recipe.task, recipe))


def run_cached(pre: Prerequisite, recipe: Recipe, run_fn: RunFn) -> tuple[Path, dict[str, Any]]:
    """The run directory of ``pre.recipe``: a cached finished run, or a new one; and a log event."""
    raw = json.loads(json.dumps(pre.recipe))
    out = pre.cache_dir / f"{pre.prefix}-{content_key(raw)}"
    if (out / "results.json").is_file():
        return out, {"event": "prerequisite", "key": pre.key, "source": "cache", "path": str(out)}
    raw.setdefault("train", {})["num_threads"] = recipe.train.num_threads
    raw.setdefault("run", {})["progress"] = recipe.run.progress
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")  # concurrent runs never share it
    shutil.rmtree(tmp, ignore_errors=True)
    run_fn(from_dict(raw), tmp)
    if (out / "results.json").is_file():  # another run finished the same prerequisite first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out, {"event": "prerequisite", "key": pre.key, "source": "training", "path": str(out)}


def resolve(recipe: Recipe, run_fn: RunFn) -> tuple[Recipe, list[dict[str, Any]]]:
    """``recipe`` with every declared prerequisite run and its key set; the log events."""
    pres = declared(recipe)
    if not pres:
        return recipe, []
    raw, events = recipe.to_dict(), []
    for pre in pres:
        out, event = run_cached(pre, recipe, run_fn)
        events.append(event)
        *parents, leaf = pre.key.split(".")
        node = raw
        for k in parents:
            node = node[k]
        node[leaf] = str(out)
    return from_dict(raw), events
