"""Recipe keys: model.pretrained, model.vision.pretrained, model.text.pretrained."""

from __future__ import annotations

import pytest
import torch

from modalab import registry
from modalab.config import from_dict
from modalab.models.pretrained.preprocess import PixelAdapter
from modalab.models.pretrained.recipe_build import recipe_tokenizer
from modalab.models.pretrained.source import PretrainedError
from modalab.models.pretrained.tokenizer import PretrainedTokenizer

pytest.importorskip("transformers")


def _recipe(model: dict, **over):
    raw = {"task": "contrastive", "data": {"source": "digits", "image_size": 16, "channels": 1},
           "model": {"name": "two_tower", **model}, "loss": {"name": "info_nce"}}
    return from_dict(raw, [f"{k}={v}" for k, v in over.items()])


def _build(recipe, vocab: int):
    return registry.build("model", "two_tower", recipe.model, image_size=16, in_channels=1, vocab_size=vocab)


def test_vision_pretrained_with_a_modalab_text_tower(vit_dir):
    r = _recipe({"vision": {"pretrained": f"hf:{vit_dir}"}, "text": {"width": 32, "depth": 1}})
    assert recipe_tokenizer(r.model) is None  # the text tower is modalab's: the word tokenizer stays
    model = _build(r, 40)
    assert isinstance(model.image_encoder, PixelAdapter)
    out = model(torch.randn(2, 1, 16, 16), torch.randint(1, 40, (2, 12)))
    assert out["image_emb"].shape == (2, 64)
    # the converted tower's weights are the checkpoint's (the ViT pooler included)
    from modalab.models.pretrained.load import load_image_tower

    ref, _ = load_image_tower(f"hf:{vit_dir}")
    torch.testing.assert_close(model.image_encoder.tower.state_dict()["pos_embed"], ref.state_dict()["pos_embed"])


def test_text_pretrained_brings_its_tokenizer(clip_dir):
    r = _recipe({"text": {"pretrained": f"hf:{clip_dir}"}, "vision": {"width": 32, "depth": 1}})
    tok = recipe_tokenizer(r.model)
    assert isinstance(tok, PretrainedTokenizer) and tok.context_length == 16
    model = _build(r, tok.vocab_size)
    emb = model.encode_text(tok(["a photo of a seven", "a cat"]))
    assert emb.shape == (2, 64)


def test_whole_dual_encoder_and_clashing_keys(clip_dir):
    r = _recipe({"pretrained": f"hf:{clip_dir}"})
    tok = recipe_tokenizer(r.model)
    model = _build(r, tok.vocab_size)
    assert model(torch.randn(2, 1, 16, 16), tok(["a cat", "a dog"]))["text_emb"].shape == (2, 24)
    with pytest.raises(PretrainedError, match="model.vision.width is set"):
        _build(_recipe({"pretrained": f"hf:{clip_dir}", "vision": {"width": 64}}), tok.vocab_size)
    with pytest.raises(PretrainedError, match="brings its own tokenizer"):
        recipe_tokenizer(_recipe({"pretrained": f"hf:{clip_dir}", "text": {"tokenizer": "byte"}}).model)
    with pytest.raises(PretrainedError, match="tokenizer has 50"):
        _build(r, 50)


def test_missing_preprocessor_config_names_the_folder(tmp_path, vit_dir):
    import shutil

    folder = tmp_path / "vit"
    shutil.copytree(vit_dir, folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(PretrainedError, match=f"{folder}: missing preprocessor_config.json"):
        _build(_recipe({"vision": {"pretrained": f"hf:{folder}"}}), 40)


def test_audio_pretrained_whisper_in_clap(whisper_dir):
    from modalab.models.clap import AudioTowerConfig, build_audio_tower
    from modalab.models.pretrained.load import load_audio_encoder

    tower = build_audio_tower(AudioTowerConfig(pretrained=f"hf:{whisper_dir}"), clip_samples=160 * 30)
    ref, _ = load_audio_encoder(f"hf:{whisper_dir}")
    wave = torch.randn(2, 160 * 30)
    mel = tower.frontend(wave)
    assert mel.shape[1] == 16  # the checkpoint's n_mels, not the config's default
    with torch.no_grad():
        torch.testing.assert_close(tower.frames(wave), ref(mel))
    assert tower(wave).shape == (2, 32)
    with pytest.raises(ValueError, match="exceed the encoder"):
        build_audio_tower(AudioTowerConfig(pretrained=f"hf:{whisper_dir}"), clip_samples=160 * 60)
