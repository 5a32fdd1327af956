"""Sweep grids: ``--grid`` specs -> arms (the cartesian product of the axes).

An axis is one key and its values (``loss.temperature=0.01,0.07``) or several linked keys that
move together (``train.batch_size,train.steps=[128,500],[64,1000]``: batch 64 is run for twice the
steps, at equal samples seen). Each arm records its overrides and its swept values per key.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from modalab.errors import ModalabError

class SweepError(ModalabError, ValueError):
    """A grid or sweep directory is invalid; the message says what was expected."""


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...]  # ``key=value`` texts, as for ``modalab run``
    params: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


def split_values(text: str) -> list[str]:
    """Split ``'a,b,[1,2],{x: 1, y: 2}'`` at top-level commas (commas in brackets stay)."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    if any(v == "" for v in out) or depth != 0:
        raise SweepError(f"bad grid values '{text}': expected comma-separated values, e.g. 0.01,0.03")
    return out


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """``['loss.temperature=0.01,0.03', 'train.batch_size=64,128']`` -> ordered {key: [values]}.

    Linked keys move together on one axis: ``'train.batch_size,train.steps=[128,500],[64,1000]'``
    is two arms (batch 128 for 500 steps, batch 64 for 1000 steps), not a product of four."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        keys = [k.strip() for k in key.split(",")]
        if not sep or any(not k or any(not p for p in k.split(".")) for k in keys):
            raise SweepError(f"bad --grid '{spec}': expected key.sub=v1,v2 (e.g. loss.temperature=0.01,0.1) "
                             f"or linked keys a.b,c.d=[a1,c1],[a2,c2]")
        key = ",".join(keys)
        taken = {k for g in grid for k in g.split(",")}
        if key in grid or taken & set(keys) or len(set(keys)) < len(keys):
            raise SweepError(f"--grid key '{key}' given twice; list all its values in one --grid")
        grid[key] = split_values(raw)
        for v in grid[key] if len(keys) > 1 else []:
            linked_values(keys, v, spec)  # fail now on a value of the wrong shape
    return grid


def linked_values(keys: list[str], value: str, spec: str = "") -> list[str]:
    """``'[64, 1000]'`` for keys ``[train.batch_size, train.steps]`` -> ``['64', '1000']`` (as typed)."""
    inner = value.strip()
    parts = split_values(inner[1:-1]) if inner.startswith("[") and inner.endswith("]") and inner[1:-1].strip() else []
    if len(parts) != len(keys):
        raise SweepError(f"bad --grid '{spec or value}': value '{value}' must list one value per linked key "
                         f"({', '.join(keys)}) in brackets, e.g. "
                         f"[{', '.join('v' + str(i + 1) for i in range(len(keys)))}]")
    return parts


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")
    return s or "none"  # "[]", "{}", "" (an empty list of stages or groups)


def expand_grid(grid: dict[str, list[str]]) -> list[Arm]:
    """The cartesian product of ``grid`` as arms (first key varies slowest). No grid: one arm."""
    if not grid:
        return [Arm("base", (), {})]
    # each axis's values as [{key: value}] (a linked axis sets several keys at once)
    axes = [[dict(zip(k.split(","), linked_values(k.split(","), v) if "," in k else [v])) for v in grid[k]]
            for k in grid]
    keys = [k for axis in grid for k in axis.split(",")]
    # short names (last dotted part) unless two keys share it
    lasts = [k.split(".")[-1] for k in keys]
    short = {k: (s if lasts.count(s) == 1 else k) for k, s in zip(keys, lasts)}
    arms = []
    for combo in itertools.product(*axes):
        params = {k: v for part in combo for k, v in part.items()}
        name = "__".join(f"{_slug(short[k])}-{_slug(v)}" for k, v in params.items())
        arms.append(Arm(name, tuple(f"{k}={v}" for k, v in params.items()), params))
    if len({a.name for a in arms}) != len(arms):
        raise SweepError(f"grid values give duplicate arm names: {[a.name for a in arms]}")
    return arms


def key_values(arms: list[Arm]) -> dict[str, list[str]]:
    """Each swept key with its values in arm order (a linked axis gives one entry per key): what a
    report plots the metric against."""
    out: dict[str, list[str]] = {}
    for arm in arms:
        for k, v in arm.params.items():
            if v not in out.setdefault(k, []):
                out[k].append(v)
    return out
