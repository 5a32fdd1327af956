"""``modalab.losses``: the contrastive losses as plain functions, and ``create(name, **cfg)`` for
the registered loss modules a recipe's ``loss:`` section selects.

    import modalab
    loss = modalab.losses.info_nce(image_emb, text_emb, logit_scale=14.3)   # (B, D), (B, D)
    module = modalab.losses.create("siglip", temperature=0.1)
"""

from __future__ import annotations

from typing import Any

from modalab.align.fine_grained import filip_logits, multi_granularity_loss
from modalab.align.losses import (
    hard_negative_info_nce,
    hcl_info_nce,
    info_nce,
    same_label_mask,
    siglip,
    soft_label_info_nce,
)
from modalab.align.tiled import tiled_info_nce, tiled_siglip

__all__ = [
    "create", "names", "info_nce", "siglip", "hard_negative_info_nce", "hcl_info_nce", "soft_label_info_nce",
    "multi_granularity_loss", "filip_logits", "same_label_mask", "tiled_info_nce", "tiled_siglip",
]


def names() -> list[str]:
    """The registered loss names (``modalab list loss`` describes them)."""
    from modalab import registry

    return registry.names("loss")


def create(name: str, **cfg: Any) -> Any:
    """The loss module registered as ``name``, configured like a recipe's ``loss:`` section
    (``cfg`` is validated by that loss's schema; unknown keys are errors listing the allowed ones)."""
    from modalab import registry
    from modalab.config import ConfigError

    entry = registry.get("loss", name)
    if entry.schema is None:
        return entry.builder(cfg)
    try:
        section = entry.schema(name=name, **cfg)
    except Exception as e:  # pydantic's ValidationError, restated with the loss name
        raise ConfigError(f"modalab.losses.create('{name}'): {e}") from None
    return entry.builder(section)
