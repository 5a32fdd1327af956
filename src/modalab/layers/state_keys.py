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
