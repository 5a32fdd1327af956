"""One base class for every error modalab raises on purpose, and short renderings of values.

``ModalabError`` is what the command line catches: each subclass (``ConfigError``, ``DataError``,
``ShardError``, ``AudioError``, ``VideoError``, ``TrainingError``, ``SweepError``,
``RegistryError``, ``ResumeError``) carries a message that already says where (file, line, key,
shard, member) and what was expected, so ``modalab`` prints it as one line and exits 2.

Values quoted in messages go through :func:`short`: a recipe value can be arbitrarily large (a
list of a million items, a YAML alias bomb), and an error message must never be.
"""

from __future__ import annotations

import reprlib
from typing import Any

_REPR = reprlib.Repr()
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 6
_REPR.maxlevel = 3


class ModalabError(Exception):
    """Base of every deliberate modalab error; its message is meant for the user as is."""


class ResumeError(ModalabError):
    """``--resume`` cannot continue a run (no valid checkpoint, or the run is still alive)."""


def short(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut to a bounded size (nested containers and long strings elided)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip(text: str, limit: int = 500) -> str:
    """A message cut to ``limit`` characters (its start kept: that is where it says where)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
