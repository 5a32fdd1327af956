"""open_clip state dicts (no open_clip import): layout, wrappers, refusals, parity with CLIPModel."""

from __future__ import annotations

import json

import pytest
import torch

from modalab.models.pretrained.export import export_open_clip
from modalab.models.pretrained.load import load_dual_encoder
from modalab.models.pretrained.source import PretrainedError

transformers = pytest.importorskip("transformers")

# open_clip's VisionTransformer / TextTransformer / CLIP parameter names (open_clip/transformer.py, model.py)
OPEN_CLIP_TOP = {"visual.class_embedding", "visual.positional_embedding", "visual.proj", "visual.conv1.weight",
                 "visual.ln_pre.weight", "visual.ln_pre.bias", "visual.ln_post.weight", "visual.ln_post.bias",
                 "token_embedding.weight", "positional_embedding", "text_projection", "ln_final.weight",
                 "ln_final.bias", "logit_scale"}
OPEN_CLIP_BLOCK = {"ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
                   "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                   "mlp.c_proj.weight", "mlp.c_proj.bias"}


@pytest.fixture(scope="module")
def oc_dir(tmp_path_factory, clip_dir):
    model, pre = load_dual_encoder(f"hf:{clip_dir}")
    return export_open_clip(model, tmp_path_factory.mktemp("oc") / "out", pre, clip_dir)


def test_layout_is_open_clips(oc_dir):
    state = torch.load(oc_dir / "open_clip_pytorch_model.bin", weights_only=True)
    want = set(OPEN_CLIP_TOP)
    for tower in ("visual.transformer", "transformer"):
        want |= {f"{tower}.resblocks.{i}.{k}" for i in range(2) for k in OPEN_CLIP_BLOCK}
    assert set(state) == want
    assert state["visual.proj"].shape == (32, 24) and state["text_projection"].shape == (32, 24)  # (width, embed)
    cfg = json.loads((oc_dir / "open_clip_config.json").read_text())["model_cfg"]
    assert cfg["embed_dim"] == 24 and cfg["quick_gelu"] is True and cfg["vision_cfg"]["patch_size"] == 8


def test_open_clip_checkpoint_matches_clipmodel(oc_dir, clip_dir, tmp_path):
    ref = transformers.CLIPModel.from_pretrained(str(clip_dir)).eval()
    # a training checkpoint as open_clip writes it: {"state_dict": {"module.<name>": ...}}, config beside it
    state = torch.load(oc_dir / "open_clip_pytorch_model.bin", weights_only=True)
    ckpt = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, ckpt)
    (tmp_path / "epoch_3.json").write_text(
        json.dumps(json.loads((oc_dir / "open_clip_config.json").read_text())["model_cfg"]))
    model, pre = load_dual_encoder(f"open_clip:{ckpt}")
    px = torch.randn(3, 3, 32, 32)
    ids = torch.randint(3, 98, (3, 16))
    ids[:, 5] = 98
    with torch.no_grad():
        out = ref(pixel_values=px, input_ids=ids)
        o = model(px, ids)
    torch.testing.assert_close(o["logit_scale"] * o["image_emb"] @ o["text_emb"].T, out.logits_per_image,
                               atol=1e-5, rtol=1e-5)
    assert pre["crop_size"] == {"height": 32, "width": 32}


def test_refusals_name_the_file(oc_dir, tmp_path):
    ckpt = tmp_path / "m.bin"
    ckpt.write_bytes((oc_dir / "open_clip_pytorch_model.bin").read_bytes())
    with pytest.raises(PretrainedError, match="no model-config JSON"):
        load_dual_encoder(f"open_clip:{ckpt}")
    cfg = json.loads((oc_dir / "open_clip_config.json").read_text())["model_cfg"]
    cfg["vision_cfg"]["timm_model_name"] = "convnext_base"
    (tmp_path / "m.json").write_text(json.dumps(cfg))
    with pytest.raises(PretrainedError, match=r"m\.json: vision_cfg\.timm_model_name"):
        load_dual_encoder(f"open_clip:{ckpt}")
    pickled = tmp_path / "p.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)},
                "opt": torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1)}, pickled)
    cfg["vision_cfg"].pop("timm_model_name")
    (tmp_path / "p.json").write_text(json.dumps(cfg))
    with pytest.raises(PretrainedError, match="weights-only"):
        load_dual_encoder(f"open_clip:{pickled}")
