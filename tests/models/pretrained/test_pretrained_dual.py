"""CLIP / SigLIP folders converted into modalab dual encoders match transformers to 1e-5 (float32)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from modalab.models.pretrained.load import load_dual_encoder
from modalab.models.pretrained.source import PretrainedError

transformers = pytest.importorskip("transformers")


def _inputs(n: int = 4, vocab: int = 99, ctx: int = 16):
    g = torch.Generator().manual_seed(3)
    px = torch.randn(n, 3, 32, 32, generator=g)
    ids = torch.randint(3, vocab - 1, (n, ctx), generator=g)
    ids[:, 0] = 1
    for i in range(n):  # end-of-text at different places, padding after it
        end = 4 + 3 * i
        ids[i, end] = vocab - 1
        ids[i, end + 1:] = 2
    return px, ids


def _pooled(out):
    return getattr(out, "pooler_output", out)


def test_clip_features_and_logits_match_transformers(clip_dir):
    ref = transformers.CLIPModel.from_pretrained(str(clip_dir)).eval()
    ours, pre = load_dual_encoder(f"hf:{clip_dir}")
    px, ids = _inputs()
    mask = (ids != 2).long()
    with torch.no_grad():
        img = _pooled(ref.get_image_features(pixel_values=px))
        txt = _pooled(ref.get_text_features(input_ids=ids, attention_mask=mask))
        out = ref(pixel_values=px, input_ids=ids, attention_mask=mask)
        torch.testing.assert_close(ours.image_proj(ours.image_encoder(px)), img, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.text_proj(ours.text_encoder(ids)), txt, atol=1e-5, rtol=1e-5)
        o = ours(px, ids)
        logits = o["logit_scale"] * o["image_emb"] @ o["text_emb"].T
    torch.testing.assert_close(logits, out.logits_per_image, atol=1e-5, rtol=1e-5)
    assert pre["crop_size"] == {"height": 32, "width": 32}


def test_siglip_logits_match_transformers(siglip_dir):
    ref = transformers.SiglipModel.from_pretrained(str(siglip_dir)).eval()
    ours, _ = load_dual_encoder(f"hf:{siglip_dir}")
    px, ids = _inputs()
    with torch.no_grad():
        out = ref(pixel_values=px, input_ids=ids)
        o = ours(px, ids)
        logits = o["logit_scale"] * o["image_emb"] @ o["text_emb"].T + o["logit_bias"]
        img = _pooled(ref.get_image_features(pixel_values=px))
    torch.testing.assert_close(logits, out.logits_per_image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.encode_image(px), torch.nn.functional.normalize(img, dim=-1), atol=1e-5, rtol=1e-5)


def test_loaded_dual_encoder_trains(clip_dir):
    """Gradients reach every converted weight (it is a modalab module, not a frozen wrapper)."""
    ours, _ = load_dual_encoder(f"hf:{clip_dir}")
    px, ids = _inputs(2)
    o = ours.train()(px, ids)
    (o["image_emb"] @ o["text_emb"].T).logsumexp(-1).sum().backward()
    no_grad = [n for n, p in ours.named_parameters() if p.grad is None and n != "logit_scale"]
    assert no_grad == []


def test_errors_name_the_folder_and_file(tmp_path, clip_dir, vit_dir):
    with pytest.raises(PretrainedError, match="does not exist"):
        load_dual_encoder(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(PretrainedError, match="expected one of"):
        load_dual_encoder(f"timm:{clip_dir}")
    with pytest.raises(PretrainedError, match=r"missing config\.json"):
        load_dual_encoder(f"hf:{tmp_path}")
    with pytest.raises(PretrainedError, match="model_type 'vit' is not a dual encoder"):
        load_dual_encoder(f"hf:{vit_dir}")
    broken = tmp_path / "broken"
    shutil.copytree(clip_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(PretrainedError, match=f"{broken}: no model.safetensors"):
        load_dual_encoder(f"hf:{broken}")


def test_unknown_weights_are_an_error(tmp_path, clip_dir):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "extra"
    shutil.copytree(clip_dir, bad)
    state = load_file(str(bad / "model.safetensors"))
    state["vision_model.extra_adapter.weight"] = torch.zeros(2)
    save_file(state, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(PretrainedError, match="extra_adapter"):
        load_dual_encoder(f"hf:{bad}")
    cfg = json.loads((bad / "config.json").read_text())
    assert cfg["model_type"] == "clip"


def test_token_level_losses_are_refused(clip_dir):
    ours, _ = load_dual_encoder(f"hf:{clip_dir}")
    px, ids = _inputs(2)
    with pytest.raises(ValueError, match="token-level losses"):
        ours(px, ids, return_tokens=True)
