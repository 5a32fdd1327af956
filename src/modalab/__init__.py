"""modalab: a lab for multimodal post-training experiments.

``import modalab`` stays fast: the API (``run``, ``load_run``, ``create_model``, ``RunResult``,
``losses``) is imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["run", "load_run", "create_model", "RunResult", "losses", "__version__"]

_API = {"run", "load_run", "create_model", "RunResult"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from modalab import api

        return getattr(api, name)
    if name == "losses":
        import importlib

        return importlib.import_module("modalab.losses")
    raise AttributeError(f"module 'modalab' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, "losses"])
