"""A registry of named builders: ``@register(kind, name)`` next to each builder.

A builder is a plain callable that turns keyword arguments (usually a recipe section) into a
component. ``build(kind, name, **kwargs)`` calls it; ``entries(kind)`` lists what exists so that
``modalab list`` can show everything. Registering the same (kind, name) twice is an error.

Components register themselves when their module is imported; ``load_all()`` imports every module
that defines builders so that the listing is complete.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    builder: Callable[..., Any]
    description: str
    schema: type | None = None  # pydantic model validating the recipe section for this entry


_REGISTRY: dict[str, dict[str, Entry]] = {}

# Modules that hold registered builders; imported by load_all().
BUILDER_MODULES: tuple[str, ...] = (
    "modalab.data.sources.digits",
    "modalab.data.sources.manifest",
    "modalab.data.sources.shards_source",
    "modalab.align.negatives",
    "modalab.align.objectives",
    "modalab.align.contrastive",
    "modalab.models.two_tower",
    "modalab.experiment.contrastive",
    "modalab.data.sources.moving_digits",
    "modalab.models.video_classifier",
    "modalab.experiment.video",
    "modalab.data.sources.varres_digits",
    "modalab.experiment.varres",
    "modalab.fusion.connectors",
    "modalab.fusion.resampler",
    "modalab.fusion.qformer",
    "modalab.models.captioner",
    "modalab.experiment.caption",
    "modalab.experiment.fusion_ablation",
    "modalab.data.sources.audio_registry",
    "modalab.models.event_detector",
    "modalab.models.clap",
    "modalab.experiment.audio_events",
    "modalab.experiment.clap",
    "modalab.experiment.tokenizer_task",
    "modalab.experiment.unified_parts",
    "modalab.experiment.unified_task",
)


class RegistryError(KeyError):
    """Raised for an unknown or duplicate registry name."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


def register(
    kind: str, name: str, description: str | None = None, schema: type | None = None
) -> Callable[[F], F]:
    """Decorator: register ``fn`` as the builder for ``(kind, name)``.

    The one-line description shown by ``modalab list`` defaults to the first line of the docstring.
    ``schema`` is an optional pydantic model (extra keys forbidden) that validates the recipe
    section selecting this entry; the builder then receives the validated fields as keywords.
    """

    def deco(fn: F) -> F:
        table = _REGISTRY.setdefault(kind, {})
        if name in table:
            prev = table[name].builder
            raise RegistryError(
                f"duplicate registration: {kind} '{name}' is already registered by "
                f"{prev.__module__}.{prev.__qualname__}; pick another name"
            )
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        table[name] = Entry(kind, name, fn, doc, schema)
        return fn

    return deco


def get(kind: str, name: str) -> Entry:
    load_all()
    table = _REGISTRY.get(kind)
    if table is None:
        raise RegistryError(f"unknown kind '{kind}'; known kinds: {', '.join(sorted(_REGISTRY))}")
    if name not in table:
        raise RegistryError(
            f"unknown {kind} '{name}'; registered {kind} names: {', '.join(sorted(table))}"
        )
    return table[name]


def build(kind: str, name: str, /, *args: Any, **kwargs: Any) -> Any:
    """Call the builder registered as ``(kind, name)`` with the given arguments."""
    return get(kind, name).builder(*args, **kwargs)


def names(kind: str) -> list[str]:
    load_all()
    return sorted(_REGISTRY.get(kind, {}))


def kinds() -> list[str]:
    load_all()
    return sorted(_REGISTRY)


def entries(kind: str | None = None) -> list[Entry]:
    load_all()
    selected = [kind] if kind is not None else sorted(_REGISTRY)
    if kind is not None and kind not in _REGISTRY:
        raise RegistryError(f"unknown kind '{kind}'; known kinds: {', '.join(sorted(_REGISTRY))}")
    return [_REGISTRY[k][n] for k in selected for n in sorted(_REGISTRY[k])]


_loaded = False


def load_all() -> None:
    """Import every module that registers builders (idempotent)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in BUILDER_MODULES:
        importlib.import_module(mod)


def unregister(kind: str, name: str) -> None:
    """Remove an entry (used by tests that register temporary builders)."""
    _REGISTRY.get(kind, {}).pop(name, None)
