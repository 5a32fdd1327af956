"""Reading recipes before validation: YAML files (with ``base:`` inheritance and the line of every
key, for error messages) and ``key.sub=value`` overrides. ``config.py`` validates the result; import
these names from ``modalab.config``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from modalab.errors import ModalabError, short
from modalab.recipe_guard import load_yaml, read_recipe


class ConfigError(ModalabError, ValueError):
    """A recipe or override is invalid; the message says where and what was expected."""


# ------------------------------------------------------------------------------- YAML loading


def _line_map(text: str) -> dict[tuple[str, ...], int]:
    """Map each dotted key path of a YAML mapping to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*path, str(k.value))
                lines[key] = k.start_mark.line + 1
                walk(v, key)

    walk(root, ())
    return lines


class _Source:
    """Where each key came from, for error messages."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lines: dict[tuple[str, ...], int] = {}
        self.overrides: dict[tuple[str, ...], str] = {}

    def where(self, loc: tuple[str, ...]) -> str:
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.overrides:
                return f"override {short(self.overrides[loc[:n]])}"
        name = str(self.path) if self.path else "<recipe>"
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.lines:
                return f"{name}:{self.lines[loc[:n]]}"
        return name


def _read_yaml(path: Path, src: _Source, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    text = read_recipe(path, ConfigError)
    try:
        data = load_yaml(text, str(path), ConfigError)  # size and alias-expansion limits
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    if not seen:
        src.lines = _line_map(text)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / str(base)).resolve()
    if base_path in seen or base_path == path.resolve():
        raise ConfigError(f"{path}: 'base: {base}' makes a cycle")
    parent = _read_yaml(base_path, src, (*seen, path.resolve()))
    return _deep_merge(parent, data)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            # a section that selects a different component starts from that component's defaults
            disc = {"data": "source", "model": "name", "loss": "name"}.get(k)
            if disc and disc in v and v[disc] != out[k].get(disc):
                out[k] = copy.deepcopy(v)
            else:
                out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ---------------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """``'train.steps=20'`` -> ``(('train', 'steps'), 20)``; values are parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"bad override '{text}': expected key.sub=value (e.g. train.steps=20)")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override '{text}': empty key; expected key.sub=value")
    try:
        value = load_yaml(raw, f"override '{short(text)}'", ConfigError) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return tuple(key.split(".")), value


def apply_overrides(raw: dict[str, Any], overrides: list[str], src: _Source) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                dotted = ".".join(path[: i + 1])
                raise ConfigError(
                    f"bad override '{text}': '{dotted}' is a value ({short(nxt)}), not a section"
                )
            node = nxt
        node[path[-1]] = value
        src.overrides[path] = text
    return out
