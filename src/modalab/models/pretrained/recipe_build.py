"""Recipe keys -> pretrained parts: ``model.pretrained``, ``model.vision.pretrained``,
``model.text.pretrained`` (the ``two_tower`` model) and the matching tokenizer for the task.

A pretrained checkpoint decides its own architecture: setting a tower's shape keys next to it is an
error rather than silently ignored. Image towers are wrapped in a
:class:`~modalab.models.pretrained.preprocess.PixelAdapter`, so they train on any modalab image
source (grey or RGB, any size) with the checkpoint's own size and mean/std.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from modalab.models.pretrained.load import (
    adapt_pixels,
    load_dual_encoder,
    load_image_tower,
    load_text_tower,
    load_tokenizer,
    preprocessor_settings,
)
from modalab.models.pretrained.source import PretrainedError, parse_spec
from modalab.models.pretrained.tokenizer import PretrainedTokenizer
from modalab.models.two_tower import TwoTower

SHAPE_KEYS = {"vision": ("patch_size", "width", "depth", "heads", "mlp_ratio", "pool", "pos_encoding"),
              "text": ("tokenizer", "context_length", "width", "depth", "heads", "mlp_ratio", "pool")}


def _changed(section: Any, keys: tuple[str, ...]) -> list[str]:
    """Keys whose value differs from the default (a resolved config.yaml lists every key)."""
    default = type(section)()
    return sorted(k for k in keys if getattr(section, k) != getattr(default, k))


def _check_unset(section: Any, keys: tuple[str, ...], where: str, spec: str) -> None:
    clash = _changed(section, keys)
    if clash:
        raise PretrainedError(
            f"{where}.{clash[0]} is set, but {spec} decides the architecture; remove "
            f"{', '.join(f'{where}.{k}' for k in clash)}"
        )


def pretrained_dual_encoder(cfg: Any, vocab_size: int) -> TwoTower:
    """``model.pretrained``: the whole dual encoder, image tower wrapped for modalab images."""
    for name in ("vision", "text"):
        _check_unset(getattr(cfg, name), SHAPE_KEYS[name] + ("pretrained",), f"model.{name}", cfg.pretrained)
    model, settings = load_dual_encoder(cfg.pretrained)
    vocab = model.text_encoder.vocab_size
    if vocab_size != vocab:
        raise PretrainedError(f"{cfg.pretrained}: its text tower has {vocab} ids but the tokenizer has {vocab_size}")
    if not cfg.learn_logit_scale:
        raise PretrainedError("model.learn_logit_scale=false is not supported with model.pretrained")
    model.image_encoder = adapt_pixels(model.image_encoder, settings)
    return model.train()


def pretrained_image_tower(v: Any) -> tuple[nn.Module, int]:
    _check_unset(v, SHAPE_KEYS["vision"], "model.vision", v.pretrained)
    tower, width = load_image_tower(v.pretrained)
    return adapt_pixels(tower, preprocessor_settings(v.pretrained)).train(), width


def pretrained_text_tower(spec: str, vocab_size: int) -> tuple[nn.Module, int]:
    tower, width = load_text_tower(spec)
    if getattr(tower, "vocab_size", vocab_size) != vocab_size:
        raise PretrainedError(f"{spec}: its text tower has {tower.vocab_size} ids but the tokenizer has {vocab_size}")
    return tower.train(), width


def text_context_length(spec: str) -> int:
    """The text length a dual encoder / text tower checkpoint was trained with."""
    s = parse_spec(spec)
    if s.kind == "open_clip":
        from modalab.models.pretrained.open_clip import read_config

        return int(read_config(s.path)[0]["text_cfg"].get("context_length", 77))
    from modalab.models.pretrained.hf_clip import auto_config

    cfg = auto_config(s.path)
    tc = getattr(cfg, "text_config", cfg)
    return int(tc.max_position_embeddings)


def recipe_tokenizer(model_cfg: Any) -> PretrainedTokenizer | None:
    """The checkpoint's tokenizer when the recipe's text tower is pretrained, else None."""
    spec = getattr(model_cfg, "pretrained", None) or getattr(getattr(model_cfg, "text", None), "pretrained", None)
    if not spec:
        return None
    text = getattr(model_cfg, "text", None)
    if text is not None and _changed(text, ("tokenizer",)):
        raise PretrainedError(f"model.text.tokenizer is set, but {spec} brings its own tokenizer; remove it")
    return load_tokenizer(spec, text_context_length(spec))
