"""One entry point per thing a recipe can ask for: ``spec`` (``hf:DIR`` / ``open_clip:FILE``) in,
a modalab module / tokenizer / image preprocessor out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from modalab.models.pretrained.preprocess import ImagePreprocessor, PixelAdapter
from modalab.models.pretrained.source import PretrainedError, Spec, parse_spec, read_json
from modalab.models.pretrained.tokenizer import PretrainedTokenizer
from modalab.models.two_tower import TwoTower


def load_dual_encoder(spec: str | Spec) -> tuple[TwoTower, dict[str, Any]]:
    """(dual encoder, preprocessor settings) for ``hf:DIR`` (CLIP/SigLIP) or ``open_clip:FILE``."""
    s = spec if isinstance(spec, Spec) else parse_spec(spec)
    if s.kind == "open_clip":
        from modalab.models.pretrained.open_clip import load_open_clip

        return load_open_clip(s.path)
    from modalab.models.pretrained.hf_clip import load_hf_dual_encoder

    return load_hf_dual_encoder(s.path), preprocessor_settings(s)


def preprocessor_settings(spec: str | Spec) -> dict[str, Any]:
    s = spec if isinstance(spec, Spec) else parse_spec(spec)
    if s.kind == "open_clip":
        from modalab.models.pretrained.open_clip import load_open_clip

        return load_open_clip(s.path)[1]
    path = s.path / "preprocessor_config.json"
    return read_json(path, "image size, crop and mean/std")


def image_preprocessor(spec: str | Spec) -> ImagePreprocessor:
    return ImagePreprocessor(preprocessor_settings(spec), str(spec))


def tokenizer_folder(spec: str | Spec) -> Path:
    """Where the tokenizer of ``spec`` lives (open_clip: the checkpoint's folder)."""
    s = spec if isinstance(spec, Spec) else parse_spec(spec)
    return s.path if s.kind == "hf" else s.path.parent


def load_tokenizer(spec: str | Spec, context_length: int) -> PretrainedTokenizer:
    folder = tokenizer_folder(spec)
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        raise PretrainedError(
            f"{folder}: no tokenizer.json (open_clip checkpoints: put the matching Hugging Face "
            "tokenizer.json and tokenizer_config.json next to the checkpoint)"
        )
    return PretrainedTokenizer(folder, context_length)


def adapt_pixels(tower: nn.Module, settings: dict[str, Any]) -> PixelAdapter:
    """Wrap ``tower`` so it takes modalab's [-1, 1] images of any size and channel count."""
    pre = ImagePreprocessor(settings)
    h, w = pre.output_size
    if h != w:
        raise PretrainedError(f"non-square checkpoint input {h}x{w} is not supported")
    return PixelAdapter(tower, h, pre.mean.tolist(), pre.std.tolist())


def load_image_tower(spec: str | Spec) -> tuple[nn.Module, int]:
    s = spec if isinstance(spec, Spec) else parse_spec(spec, ("hf",))
    from modalab.models.pretrained.hf_towers import load_hf_vision_tower

    return load_hf_vision_tower(s.path)


def load_text_tower(spec: str | Spec) -> tuple[nn.Module, int]:
    s = spec if isinstance(spec, Spec) else parse_spec(spec, ("hf",))
    from modalab.models.pretrained.hf_towers import load_hf_text_tower

    return load_hf_text_tower(s.path)


def load_audio_encoder(spec: str | Spec) -> tuple[nn.Module, int]:
    s = spec if isinstance(spec, Spec) else parse_spec(spec, ("hf",))
    from modalab.models.pretrained.hf_towers import load_hf_whisper_encoder

    return load_hf_whisper_encoder(s.path)


def load_causal_lm(spec: str | Spec) -> nn.Module:
    s = spec if isinstance(spec, Spec) else parse_spec(spec, ("hf",))
    from modalab.models.pretrained.causal_lm import load_hf_causal_lm

    return load_hf_causal_lm(s.path)
