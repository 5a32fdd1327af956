"""Optional dependencies, imported when first used, with an error that names the extra to install.

``librosa`` and ``soundfile`` come with ``pip install 'modalab[audio]'``, ``av`` (PyAV) with
``modalab[video]``; the base install runs the image recipes without them, and ``modalab list``
never imports them.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Callable

EXTRAS = {"librosa": "audio", "soundfile": "audio", "soxr": "audio", "av": "video"}


def require(module: str) -> ModuleType:
    """``importlib.import_module(module)``, or an ImportError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        hint = f"pip install 'modalab[{extra}]'" if extra else f"pip install {top}"
        raise ImportError(f"{module} is needed here but not installed: {hint}") from e


class LazyModule(ModuleType):
    """A stand-in bound at module level (``av = lazy("av")``) that imports on first attribute use."""

    def __init__(self, name: str, setup: Callable[[], None] | None = None) -> None:
        super().__init__(name)
        self._module: ModuleType | None = None
        self._setup = setup

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if self._module is None:
            if self._setup is not None:
                self._setup()
            self._module = require(self.__name__)
        return getattr(self._module, attr)


def lazy(module: str, setup: Callable[[], None] | None = None) -> ModuleType:
    """A module object that imports ``module`` (via :func:`require`) when an attribute is first read;
    ``setup`` runs just before that import (e.g. choosing matplotlib's backend)."""
    return LazyModule(module, setup)
