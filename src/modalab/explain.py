"""``modalab explain KEY``: a recipe section's fields, types, defaults and descriptions, read from
the schema itself (so it cannot drift from what ``modalab run`` accepts).

KEY is a fixed section or field (``train``, ``train.steps``, ``optim``, ``run``), or a
registry-selected section with the component that selects it: ``model.two_tower``,
``model.two_tower.vision``, ``loss.info_nce``, ``data.digits``, ``eval.contrastive`` (``eval``
follows the task). A bare ``data`` / ``model`` / ``loss`` / ``eval`` lists the components.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from modalab import registry
from modalab.config import DYNAMIC_SECTIONS, FIXED_SECTIONS, ConfigError, DataBase, EvalBase, NamedBase

SELECTED = {**{k: kind for k, (kind, _) in DYNAMIC_SECTIONS.items()}, "eval": "task"}
BASES = {"data": DataBase, "model": NamedBase, "loss": NamedBase, "eval": EvalBase}


def type_name(ann: Any) -> str:
    """``int``, ``float | None``, ``list[str]``, ``Literal['a', 'b']`` as a reader writes them."""
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(ann))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(ann))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(ann))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if ann is type(None):
        return "None"
    return getattr(ann, "__name__", str(ann))


def _submodel(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in typing.get_args(ann):
        m = _submodel(a)
        if m is not None:
            return m
    return None


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        return repr(field.default)
    if field.default_factory is not None:
        try:
            v = field.default_factory()
        except TypeError:
            return "(computed)"
        return repr(v.model_dump() if isinstance(v, BaseModel) else v)
    return "(required)"


def describe(model: type[BaseModel], title: str) -> str:
    """A table of ``model``'s fields: name, type, default, description."""
    rows = []
    for name, f in model.model_fields.items():
        desc = f.description or ""
        sub = _submodel(f.annotation)
        if sub is not None and not desc:
            desc = f"a section: modalab explain {title}.{name}"
        default = "(a section)" if sub is not None and f.default_factory is not None else _default(f)
        rows.append((name, type_name(f.annotation), default, desc))
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    w = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    lines = [f"{title}: {doc}" if doc and not doc.startswith("!!!") else f"{title}:"]
    for r in rows:
        lines.append(f"  {r[0].ljust(w[0])}  {r[1].ljust(w[1])}  default {r[2].ljust(w[2])}  {r[3]}".rstrip())
    return "\n".join(lines)


def _walk(model: type[BaseModel], parts: list[str], title: str) -> str:
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            raise ConfigError(f"modalab explain: '{title}' has no key '{part}'; its keys: "
                              f"{', '.join(model.model_fields)}")
        f = model.model_fields[part]
        title = f"{title}.{part}"
        sub = _submodel(f.annotation)
        if sub is None:
            if i != len(parts) - 1:
                raise ConfigError(f"modalab explain: '{title}' is a value, not a section")
            return (f"{title}: {type_name(f.annotation)}, default {_default(f)}"
                    + (f"\n  {f.description}" if f.description else ""))
        model = sub
    return describe(model, title)


def explain(key: str) -> str:
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError("modalab explain: give a key, e.g. train, train.steps, model.two_tower")
    head, rest = parts[0], parts[1:]
    if head in FIXED_SECTIONS:
        return _walk(FIXED_SECTIONS[head], rest, head)
    if head in SELECTED:
        kind = SELECTED[head]
        if not rest:
            names = "\n".join(f"  {e.name:<28} {e.description}" for e in registry.entries(kind))
            return (describe(BASES[head], f"{head} (fields every {kind} accepts)")
                    + f"\n\n{head} is selected by a registered {kind}; explain one with "
                      f"`modalab explain {head}.NAME`:\n{names}")
        entry = registry.get(kind, rest[0])
        schema = entry.schema or BASES[head]
        return _walk(schema, rest[1:], f"{head}.{rest[0]}")
    if head == "task":
        return "task: str, default 'contrastive'\n  the registered task that runs the recipe; modalab list task"
    raise ConfigError(f"modalab explain: unknown section '{head}'; sections: task, data, model, loss, "
                      f"eval, {', '.join(FIXED_SECTIONS)}")
