"""Single towers (CLIP/SigLIP/ViT image, CLIP/SigLIP text, Whisper encoder) and wrapped causal LMs
match transformers to 1e-5 in float32."""

from __future__ import annotations

import pytest
import torch

from modalab.models.pretrained.load import load_audio_encoder, load_causal_lm, load_image_tower, load_text_tower
from modalab.models.pretrained.source import PretrainedError

transformers = pytest.importorskip("transformers")
TOL = dict(atol=1e-5, rtol=1e-5)


def test_vit_hidden_states_and_pooler(vit_dir):
    ref = transformers.ViTModel.from_pretrained(str(vit_dir)).eval()
    tower, width = load_image_tower(f"hf:{vit_dir}")
    px = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = ref(pixel_values=px)
        torch.testing.assert_close(tower.forward_tokens(px), out.last_hidden_state, **TOL)
        torch.testing.assert_close(tower(px), out.pooler_output, **TOL)
    assert width == 32


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_vision_tower_from_dual_folder(family, clip_dir, siglip_dir):
    folder = clip_dir if family == "clip" else siglip_dir
    cls = transformers.CLIPVisionModel if family == "clip" else transformers.SiglipVisionModel
    ref = cls.from_pretrained(str(folder)).eval()
    tower, _ = load_image_tower(f"hf:{folder}")
    px = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = ref(pixel_values=px)
        torch.testing.assert_close(tower(px), out.pooler_output, **TOL)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_text_tower_from_dual_folder(family, clip_dir, siglip_dir):
    folder = clip_dir if family == "clip" else siglip_dir
    cls = transformers.CLIPTextModel if family == "clip" else transformers.SiglipTextModel
    ref = cls.from_pretrained(str(folder)).eval()
    tower, _ = load_text_tower(f"hf:{folder}")
    ids = torch.randint(3, 98, (3, 16))
    ids[:, 9] = 98
    with torch.no_grad():
        torch.testing.assert_close(tower(ids), ref(input_ids=ids).pooler_output, **TOL)


def test_whisper_encoder_hidden_states(whisper_dir):
    ref = transformers.WhisperModel.from_pretrained(str(whisper_dir)).eval()
    enc, width = load_audio_encoder(f"hf:{whisper_dir}")
    mel = torch.randn(2, 16, 40)  # (B, n_mels, 2 * max_source_positions)
    with torch.no_grad():
        out = ref.encoder(input_features=mel)
        torch.testing.assert_close(enc(mel), out.last_hidden_state, **TOL)
    assert width == 32


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_causal_lm_logits_and_prefix(family, gpt2_dir, qwen2_dir):
    folder = gpt2_dir if family == "gpt2" else qwen2_dir
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    lm = load_causal_lm(f"hf:{folder}")
    ids = torch.randint(3, 98, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(lm(ids, mask), ref(input_ids=ids, attention_mask=mask).logits, **TOL)
        # a prefix of embeddings: the same as feeding the embeddings of its tokens
        pre_ids = torch.randint(3, 98, (2, 3))
        prefix = ref.get_input_embeddings()(pre_ids)
        full = ref(input_ids=torch.cat([pre_ids, ids], 1)).logits[:, 3:]
        torch.testing.assert_close(lm(ids, mask, prefix=prefix), full, **TOL)
    assert lm.hidden_size == 32 and lm.vocab_size == 99


def test_tower_errors(vit_dir, whisper_dir, gpt2_dir):
    with pytest.raises(PretrainedError, match="not a supported text tower"):
        load_text_tower(f"hf:{vit_dir}")
    with pytest.raises(PretrainedError, match="not a supported image tower"):
        load_image_tower(f"hf:{whisper_dir}")
    with pytest.raises(PretrainedError, match="not a supported audio encoder"):
        load_audio_encoder(f"hf:{gpt2_dir}")
    with pytest.raises(PretrainedError, match="hf:PATH"):
        load_image_tower(f"open_clip:{vit_dir}")
