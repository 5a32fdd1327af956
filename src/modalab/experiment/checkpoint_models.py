"""A dual encoder with its text and image preprocessing, from a checkpoint spec or a run directory.

``hf:DIR`` / ``open_clip:FILE`` load through ``models/pretrained``: images go through the
checkpoint's own preprocessor (Pillow), texts through its tokenizer. A run directory of the
``contrastive`` task rebuilds its model from ``config.yaml`` and loads the newest valid
checkpoint; its images go through the run's data preprocessing (resize, centre crop, [-1, 1]),
and its tokenizer is the run's (saved with the checkpoint) or the pretrained one it was built from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PIL import Image
from torch import Tensor

from modalab import registry
from modalab.models.two_tower import TwoTower


@dataclass
class LoadedDualEncoder:
    model: TwoTower
    tokenize: Callable[[list[str]], Tensor]  # list of B texts -> (B, L) ids
    image: Callable[[Image.Image], Tensor]  # PIL -> (C, H, W) model input
    source: str  # the spec or run directory
    run_dir: Path | None = None
    pretrained: str | None = None  # the hf:/open_clip: spec the model came from, if any
    settings: dict[str, Any] | None = None  # preprocessor settings of that checkpoint


def load_any(target: str) -> LoadedDualEncoder:
    """``hf:DIR`` | ``open_clip:FILE`` | a run directory -> :class:`LoadedDualEncoder` (eval mode)."""
    if target.startswith(("hf:", "open_clip:")):
        return load_spec(target)
    path = Path(target)
    if (path / "config.yaml").is_file():
        return load_run(path)
    raise FileNotFoundError(f"{target}: expected hf:DIR, open_clip:FILE or a run directory with config.yaml")


def load_spec(spec: str) -> LoadedDualEncoder:
    from modalab.models.pretrained.load import load_dual_encoder
    from modalab.models.pretrained.preprocess import ImagePreprocessor
    from modalab.models.pretrained.recipe_build import text_context_length
    from modalab.models.pretrained.load import load_tokenizer

    model, settings = load_dual_encoder(spec)
    tok = load_tokenizer(spec, text_context_length(spec))
    return LoadedDualEncoder(model.eval(), tok, ImagePreprocessor(settings, spec), spec, None, spec, settings)


def load_run(run_dir: Path) -> LoadedDualEncoder:
    from modalab.config import load
    from modalab.data.transforms import normalize, pil_to_tensor, resize_center_crop
    from modalab.models.pretrained.recipe_build import recipe_tokenizer
    from modalab.models.pretrained.load import preprocessor_settings
    from modalab.text.tokenizer import tokenizer_from_dict
    from modalab.train.checkpoint import latest_valid, load_weights

    cfg = load(run_dir / "config.yaml")
    if cfg.task != "contrastive":
        raise ValueError(f"{run_dir}/config.yaml: task is {cfg.task!r}; only 'contrastive' runs hold a dual encoder")
    ckpt = latest_valid(run_dir / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir}: no valid checkpoint under checkpoints/")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    tok = recipe_tokenizer(cfg.model) or tokenizer_from_dict(state["tokenizer"])
    size, channels = int(getattr(cfg.data, "image_size", 32)), int(getattr(cfg.data, "channels", 3))
    model = registry.build("model", cfg.model.name, cfg.model, image_size=size, in_channels=channels,
                           vocab_size=tok.vocab_size)
    load_weights(ckpt, model)

    def image(im: Image.Image) -> Tensor:
        return normalize(resize_center_crop(pil_to_tensor(im, channels), size))

    spec = getattr(cfg.model, "pretrained", None)
    settings = preprocessor_settings(spec) if spec else None
    return LoadedDualEncoder(model.eval(), tok, image, str(run_dir), run_dir, spec, settings)
