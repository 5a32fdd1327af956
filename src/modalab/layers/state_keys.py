"""Parameter renames that keep old checkpoints loading.

When a module's parameters move (a block migrated onto ``layers.Block``), ``rename_on_load``
registers a load-state-dict pre-hook that rewrites the old keys to the new ones before loading, so
``load_state_dict`` of a checkpoint written before the move works unchanged (strict included).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn


def rename_keys(state: dict[str, Any], prefix: str, mapping: Mapping[str, str]) -> None:
    """In place: every key ``prefix + old + rest`` becomes ``prefix + new + rest`` for each
    ``old -> new`` of ``mapping`` (old names are key prefixes, e.g. ``"ln1." -> "norm1."``).
    A key whose new name is already present is left alone (a current checkpoint)."""
    for key in [k for k in state if k.startswith(prefix)]:
        local = key[len(prefix):]
        for old, new in mapping.items():
            if local.startswith(old):
                target = prefix + new + local[len(old):]
                if target not in state:
                    state[target] = state.pop(key)
                break


def rename_on_load(module: nn.Module, mapping: Mapping[str, str]) -> None:
    """Make ``module`` accept state dicts that use the old names in ``mapping`` (old -> new)."""
    table = dict(mapping)

    def hook(state: dict[str, Any], prefix: str, *args: Any) -> None:
        rename_keys(state, prefix, table)

    module._register_load_state_dict_pre_hook(hook)


def split_keys(state: dict[str, Any], prefix: str, mapping: Mapping[str, tuple[str, ...]]) -> None:
    """In place: a fused tensor ``prefix + old`` is cut along dim 0 into equal parts stored as
    ``prefix + new_i`` (e.g. ``nn.MultiheadAttention``'s ``in_proj_weight`` (3E, E) -> the q, k
    and v projections' weights (E, E) each). Left alone when the first new key is present."""
    for old, parts in mapping.items():
        key = prefix + old
        if key not in state or prefix + parts[0] in state:
            continue
        fused = state.pop(key)
        if fused.shape[0] % len(parts):
            raise ValueError(
                f"layers/state_keys.py: {key} has {fused.shape[0]} rows, which do not split into "
                f"{len(parts)} equal parts ({', '.join(parts)})"
            )
        for name, chunk in zip(parts, fused.chunk(len(parts), dim=0)):
            state[prefix + name] = chunk


def split_on_load(module: nn.Module, mapping: Mapping[str, tuple[str, ...]]) -> None:
    """Make ``module`` accept state dicts holding the fused tensors of ``mapping`` (old -> parts)."""
    table = dict(mapping)

    def hook(state: dict[str, Any], prefix: str, *args: Any) -> None:
        split_keys(state, prefix, table)

    module._register_load_state_dict_pre_hook(hook)
