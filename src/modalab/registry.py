"""A registry of named builders: ``@register(kind, name)`` next to each builder.

A builder is a plain callable that turns keyword arguments (usually a recipe section) into a
component. ``build(kind, name, **kwargs)`` calls it; ``entries(kind)`` lists what exists so that
``modalab list`` can show everything. Registering the same (kind, name) twice is an error.

Components register themselves when their module is imported; ``load_all()`` imports every module
that defines builders (found by ``builder_modules()``, which walks the package) so that the listing
is complete.
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from modalab.errors import ModalabError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    builder: Callable[..., Any]
    description: str
    schema: type | None = None  # pydantic model validating the recipe section for this entry


_REGISTRY: dict[str, dict[str, Entry]] = {}

_REGISTERS = re.compile(r"^@register\(", re.MULTILINE)


def builder_modules() -> list[str]:
    """Every ``modalab`` module that registers a builder (a line starting ``@register(``), found by
    walking the package's files; sorted, so the import order is the same on every machine.

    Only the source text is read here; ``load_all`` imports what this returns. A new module that
    registers is found without being listed anywhere.
    """
    root = Path(__file__).resolve().parent
    out = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "registry.py" and path.parent == root:
            continue
        if _REGISTERS.search(path.read_text(encoding="utf-8")):
            rel = path.relative_to(root.parent).with_suffix("")
            out.append(".".join(rel.parts))
    return out


class RegistryError(ModalabError, KeyError):
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
    for mod in builder_modules():
        importlib.import_module(mod)


def unregister(kind: str, name: str) -> None:
    """Remove an entry (used by tests that register temporary builders)."""
    _REGISTRY.get(kind, {}).pop(name, None)


# --------------------------------------------------------------------- listing without imports


def _const(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def declared_entries(kind: str | None = None) -> list[tuple[str, str, str]]:
    """``(kind, name, description)`` of every ``@register(...)`` in the package, read from the
    source with ``ast`` (nothing imported: ``modalab list`` stays fast without torch and the
    modality libraries). Sorted like :func:`entries`; a test checks both agree.
    """
    root = Path(__file__).resolve().parent
    found: dict[tuple[str, str], str] = {}
    for mod in builder_modules():
        path = root.parent.joinpath(*mod.split(".")).with_suffix(".py")
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:  # builder_modules() matched column-0 decorators: module level only
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                continue
            for dec in node.decorator_list:
                if not (isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "register"):
                    continue
                args = [_const(a) for a in dec.args[:3]]
                k, name = (args + [None, None])[:2]
                if k is None or name is None:
                    raise RegistryError(f"{path}:{dec.lineno}: @register needs literal kind and name strings")
                desc = args[2] if len(args) > 2 else None
                desc = next((_const(kw.value) for kw in dec.keywords if kw.arg == "description"), desc)
                doc = desc or (ast.get_docstring(node) or "").strip().split("\n")[0]
                found[(k, name)] = doc
    if kind is not None and kind not in {k for k, _ in found}:
        raise RegistryError(f"unknown kind '{kind}'; known kinds: {', '.join(sorted({k for k, _ in found}))}")
    return [(k, n, found[(k, n)]) for k, n in sorted(found) if kind is None or k == kind]
