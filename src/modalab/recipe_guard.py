"""Guards a recipe passes before its values are validated: hostile YAML is refused early.

- Size: a recipe file is at most :data:`MAX_RECIPE_BYTES` (recipes are a few KB).
- Alias expansion: YAML aliases share nodes, so 500 bytes of nested ``&a [*b, *b, ...]`` describe
  a value of billions of items; nothing is built until the composed node graph, expanded, has at
  most :data:`MAX_NODES` nodes. A recursive alias is refused too.
- NUL bytes: no string of a recipe (key or value) may contain ``\\0`` (paths would fail later with
  a bare ``ValueError``).
- Strict numbers: a boolean is not a number. :func:`reject_bool` (used by every recipe section)
  refuses ``true`` for an int or float field (``train.steps=true`` is not 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, get_args, get_origin

import yaml

MAX_RECIPE_BYTES = 256 * 1024
MAX_NODES = 100_000


def _expanded_size(root: yaml.Node, where: str, error: Callable[[str], Exception]) -> int:
    """Nodes of ``root`` with every alias expanded; refuses cycles and sizes over MAX_NODES."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise error(f"{where}: a YAML alias refers to itself (recursive structure); not a recipe")
        active.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(c) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        sizes[key] = n
        return n

    total = size(root)
    if total > MAX_NODES:
        raise error(f"{where}: YAML aliases expand to {total:,} nodes (limit {MAX_NODES:,}); a recipe "
                    f"is never that large (an alias bomb?)")
    return total


def read_recipe(path: Path, error: Callable[[str], Exception]) -> str:
    """The text of a recipe file, refused before reading when it is over the size limit."""
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise error(f"{path}: {size:,} bytes; a recipe is at most {MAX_RECIPE_BYTES:,} bytes")
    return path.read_text(encoding="utf-8")


def load_yaml(text: str, where: str, error: Callable[[str], Exception]) -> Any:
    """``yaml.safe_load(text)`` after the size and alias-expansion checks; errors via ``error``."""
    if len(text.encode("utf-8")) > MAX_RECIPE_BYTES:
        raise error(f"{where}: {len(text.encode('utf-8')):,} bytes; a recipe is at most "
                    f"{MAX_RECIPE_BYTES:,} bytes")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, where, error)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def find_nul(value: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The key path of the first string (key or value) holding a NUL byte, else None."""
    if isinstance(value, str):
        return path if "\0" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            p = (*path, str(k))
            if "\0" in str(k):
                return p
            found = find_nul(v, p)
            if found is not None:
                return found
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = find_nul(v, (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",))
            if found is not None:
                return found
    return None


def _allows_bool(ann: Any) -> bool:
    if ann is bool or ann is Any:
        return True
    if get_origin(ann) is Literal:
        return any(isinstance(a, bool) for a in get_args(ann))
    return any(_allows_bool(a) for a in get_args(ann) if get_origin(ann) is not None and
               get_origin(ann) not in (list, tuple, dict, set))


def _sequence_items(ann: Any) -> tuple[Any, ...] | None:
    """Item types of a ``list[X]`` / ``tuple[X, ...]`` / ``tuple[X, Y]`` annotation (inside an
    Optional too), else None."""
    if get_origin(ann) in (list, tuple):
        return tuple(a for a in get_args(ann) if a is not Ellipsis)
    for a in get_args(ann) if get_origin(ann) is not None else ():
        found = _sequence_items(a)
        if found is not None:
            return found
    return None


def reject_bool(value: Any, annotation: Any) -> Any:
    """``value`` unchanged, unless it is a boolean for a field whose type has no ``bool`` (or a
    list/tuple holding a boolean where its item type has none)."""
    if isinstance(value, bool) and not _allows_bool(annotation):
        raise ValueError("expected a number, got a boolean (true/false is not a number here)")
    items = _sequence_items(annotation) if isinstance(value, (list, tuple)) else None
    if items:
        for i, v in enumerate(value):
            if isinstance(v, bool) and not _allows_bool(items[min(i, len(items) - 1)]):
                raise ValueError(f"item {i}: expected a number, got a boolean")
    return value
