"""The recipes that ship with modalab (package ``modalab.recipes``; their one copy is the
top-level ``recipes/`` folder of a checkout, mapped into the package by pyproject.toml).

A recipe argument is a file when one exists at that path; otherwise it is looked up here by name:
``clip_digits``, ``clip_digits.yaml``, ``recipes/clip_digits.yaml`` and ``chapter5/temperature``
all resolve, so the commands in the docs work from a ``pip install`` too.
"""

from __future__ import annotations

import difflib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import yaml

from modalab.train.checkpoint import atomic_write_text


class RecipeNotFound(FileNotFoundError):
    """No file at the path and no packaged recipe of that name; the message lists close names."""


@dataclass(frozen=True)
class RecipeInfo:
    name: str  # relative to the recipes folder, without .yaml (e.g. chapter5/temperature)
    path: Path
    claim: str  # the header's first comment line, without '# '


def recipes_root() -> Path:
    return Path(str(importlib.resources.files("modalab.recipes")))


def header(text: str) -> list[str]:
    """The leading comment block of a recipe (its claim, command and expected result)."""
    out = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        out.append(line)
    return out


def list_recipes() -> list[RecipeInfo]:
    root = recipes_root()
    infos = []
    for f in sorted(root.rglob("*.yaml")):
        head = header(f.read_text(encoding="utf-8"))
        claim = head[0].lstrip("# ").strip() if head else ""
        infos.append(RecipeInfo(f.relative_to(root).with_suffix("").as_posix(), f, claim))
    return infos


def _name(arg: str) -> str:
    name = arg.replace("\\", "/")
    name = name[len("recipes/"):] if name.startswith("recipes/") else name
    return name[: -len(".yaml")] if name.endswith(".yaml") else name


def find_recipe(name: str) -> Path:
    """The packaged recipe called ``name`` (see the module docstring for the accepted spellings)."""
    key = _name(name)
    if ".." in key.split("/"):
        raise RecipeNotFound(f"recipe name '{name}' may not contain '..'")
    known = {r.name: r.path for r in list_recipes()}
    if key in known:
        return known[key]
    close = difflib.get_close_matches(key, list(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `modalab recipes list` shows them all"
    raise RecipeNotFound(f"no recipe file '{name}' and no packaged recipe named '{key}'{hint}")


def resolve(arg: str | Path) -> Path:
    """``arg`` itself when it is a file, else the packaged recipe of that name."""
    p = Path(arg)
    if p.is_file():
        return p
    return find_recipe(str(arg))


def flat_text(path: Path) -> str:
    """A recipe as one self-contained file: its header, then its mapping with every ``base:``
    recipe merged in (a copy outside the recipes folder cannot follow a relative ``base:``)."""
    from modalab.config import read_mapping

    text = path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    if not isinstance(raw, dict) or "base" not in raw:
        return text
    merged = read_mapping(path)
    note = f"# (copied by `modalab recipes cp` with its base '{raw['base']}' merged in)"
    return "\n".join([*header(text), note, ""]) + yaml.safe_dump(merged, sort_keys=False)


def copy_recipe(name: str, dest: Path, force: bool = False) -> Path:
    """Copy packaged recipe ``name`` to ``dest`` (a file, or a folder to put ``<name>.yaml`` in)."""
    src = find_recipe(name)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / src.name
    if dest.exists() and not force:
        raise FileExistsError(f"{dest} exists; choose another destination or pass --force")
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest, flat_text(src))
    return dest
