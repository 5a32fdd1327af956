"""open_clip checkpoints as modalab dual encoders, without importing open_clip.

An open_clip checkpoint is a state dict (``.pt`` / ``.bin`` read with ``weights_only=True``, or
``.safetensors``; a ``{"state_dict": ...}`` wrapper and a ``module.`` prefix are accepted) plus the
model-config JSON open_clip builds it from: ``<checkpoint stem>.json`` or ``open_clip_config.json``
(its ``model_cfg``) in the same folder. Supported: the standard ViT image tower and text
transformer (``embed_dim``, ``vision_cfg``, ``text_cfg``, ``quick_gelu``, optional ``init_logit_bias``
for SigLIP-trained ones); other towers (timm, ModifiedResNet, CoCa, HF text) are refused by name.

Layout (open_clip ``VisionTransformer`` / ``TextTransformer``): class token, no patch bias,
``ln_pre``, fused ``in_proj`` attention, ``ln_post``; ``proj`` / ``text_projection`` are stored
(in, out), i.e. transposed relative to a Linear weight; text pooled at the largest id (``argmax``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.models.pretrained.keymap import KeyMap
from modalab.models.pretrained.source import PretrainedError, quick_gelu, read_json
from modalab.models.two_tower import TwoTower
from modalab.text.clip_text import PretrainedTextTransformer
from modalab.vision.clip_vit import PretrainedViT

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def config_path(ckpt: Path) -> Path:
    """The model-config JSON next to ``ckpt``."""
    for cand in (ckpt.with_suffix(".json"), ckpt.parent / "open_clip_config.json"):
        if cand.is_file():
            return cand
    raise PretrainedError(
        f"{ckpt}: no model-config JSON; expected {ckpt.with_suffix('.json').name} or open_clip_config.json "
        f"in {ckpt.parent} (open_clip's model_configs/<name>.json)"
    )


def read_config(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(model_cfg, preprocess_cfg, path)."""
    path = config_path(ckpt)
    raw = read_json(path, "open_clip model config")
    model_cfg = raw.get("model_cfg", raw)
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in model_cfg:
            raise PretrainedError(f"{path}: missing {key!r} "
                                  "(an open_clip model config has embed_dim, vision_cfg, text_cfg)")
    return model_cfg, raw.get("preprocess_cfg", {}), path


def read_state(ckpt: Path) -> dict[str, Tensor]:
    if ckpt.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(ckpt))
    else:
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception as e:
            raise PretrainedError(f"{ckpt}: not a weights-only torch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PretrainedError(f"{ckpt}: expected a state dict, got {type(state).__name__}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _refuse(cfg: dict[str, Any], path: Path) -> None:
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    for where, sub, keys in (("vision_cfg", v, ("timm_model_name", "attentional_pool")),
                             ("text_cfg", t, ("hf_model_name",))):
        for k in keys:
            if sub.get(k):
                raise PretrainedError(f"{path}: {where}.{k}={sub[k]!r} is not supported "
                                      "(standard ViT / text transformer only)")
    if isinstance(v.get("layers"), (list, tuple)):
        raise PretrainedError(f"{path}: vision_cfg.layers is a list (ModifiedResNet); "
                              "only ViT image towers are supported")
    for where, sub, key, want in (("vision_cfg", v, "pool_type", "tok"), ("text_cfg", t, "pool_type", "argmax"),
                                  ("text_cfg", t, "no_causal_mask", False), ("text_cfg", t, "proj_bias", False),
                                  ("vision_cfg", v, "no_ln_pre", False), ("vision_cfg", v, "ls_init_value", None)):
        if sub.get(key, want) != want:
            raise PretrainedError(f"{path}: {where}.{key}={sub[key]!r} is not supported (expected {want!r})")


def build_open_clip(cfg: dict[str, Any], path: Path) -> TwoTower:
    """An untrained :class:`TwoTower` in open_clip's standard layout."""
    _refuse(cfg, path)
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    act = quick_gelu if cfg.get("quick_gelu", False) else F.gelu
    vw, tw = int(v.get("width", 768)), int(t.get("width", 512))
    img = PretrainedViT(
        image_size=int(v.get("image_size", 224)), patch_size=int(v.get("patch_size", 16)), in_channels=3,
        width=vw, depth=int(v.get("layers", 12)), heads=vw // int(v.get("head_width", 64)),
        mlp_hidden=int(vw * float(v.get("mlp_ratio", 4.0))), act=act,
    )
    txt = PretrainedTextTransformer(
        vocab_size=int(t.get("vocab_size", 49408)), context_length=int(t.get("context_length", 77)), width=tw,
        depth=int(t.get("layers", 12)), heads=int(t.get("heads", 8)),
        mlp_hidden=int(tw * float(t.get("mlp_ratio", 4.0))), act=act, causal=True, pool="argmax",
    )
    e = int(cfg["embed_dim"])
    return TwoTower(img, txt, nn.Linear(vw, e, bias=False), nn.Linear(tw, e, bias=False),
                    init_logit_bias=cfg.get("init_logit_bias"))


def _blocks(km: KeyMap, ours: str, theirs: str, depth: int) -> None:
    for i in range(depth):
        o, r = f"{ours}.blocks.{i}", f"{theirs}.resblocks.{i}"
        km.norm(f"{o}.norm1", f"{r}.ln_1")
        km.rename(f"{o}.attn.qkv.weight", f"{r}.attn.in_proj_weight")
        km.rename(f"{o}.attn.qkv.bias", f"{r}.attn.in_proj_bias")
        km.linear(f"{o}.attn.proj", f"{r}.attn.out_proj")
        km.norm(f"{o}.norm2", f"{r}.ln_2")
        km.linear(f"{o}.mlp.fc1", f"{r}.mlp.c_fc")
        km.linear(f"{o}.mlp.fc2", f"{r}.mlp.c_proj")


def open_clip_keymap(vision_depth: int, text_depth: int, bias: bool) -> KeyMap:
    km = KeyMap(ignore=("attn_mask",))
    km.rename("image_encoder.patch_embed.weight", "visual.conv1.weight")
    km.rename("image_encoder.cls_token", "visual.class_embedding")
    km.rename("image_encoder.pos_embed", "visual.positional_embedding")
    km.norm("image_encoder.pre_norm", "visual.ln_pre")
    _blocks(km, "image_encoder.transformer", "visual.transformer", vision_depth)
    km.norm("image_encoder.norm", "visual.ln_post")
    km.rename("image_proj.weight", "visual.proj")
    km.rename("text_encoder.token_embed.weight", "token_embedding.weight")
    km.rename("text_encoder.pos_embed", "positional_embedding")
    _blocks(km, "text_encoder.transformer", "transformer", text_depth)
    km.norm("text_encoder.norm", "ln_final")
    km.rename("text_proj.weight", "text_projection")
    km.transposed |= {"image_proj.weight", "text_proj.weight"}
    km.rename("logit_scale", "logit_scale")
    if bias:
        km.rename("logit_bias", "logit_bias")
    return km


def load_open_clip(ckpt: Path) -> tuple[TwoTower, dict[str, Any]]:
    """(dual encoder with the checkpoint's weights, preprocessing settings)."""
    cfg, pre, path = read_config(ckpt)
    model = build_open_clip(cfg, path)
    state = read_state(ckpt)
    km = open_clip_keymap(len(model.image_encoder.transformer.blocks), len(model.text_encoder.transformer.blocks),
                          model.logit_bias is not None)
    shapes = {k: s.shape for k, s in model.state_dict().items()}
    model.load_state_dict(km.to_ours(state, shapes, str(ckpt)))
    size = int(cfg["vision_cfg"].get("image_size", 224))
    preprocess = {
        "size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}, "do_center_crop": True,
        "resample": 3, "image_mean": list(pre.get("mean", OPENAI_MEAN)), "image_std": list(pre.get("std", OPENAI_STD)),
    }
    return model.eval(), preprocess


def open_clip_config(model: TwoTower) -> dict[str, Any]:
    """The open_clip model config of a CLIP-layout :class:`TwoTower` (for export)."""
    img, txt = model.image_encoder, model.text_encoder
    vblk, tblk = img.transformer.blocks[0], txt.transformer.blocks[0]
    quick = vblk.mlp.act is quick_gelu
    argmax = txt.pool == "argmax" or (txt.pool == "eos_id" and txt.eos_id == txt.vocab_size - 1)
    if not argmax or not txt.causal or (tblk.mlp.act is quick_gelu) != quick or vblk.norm1.eps != 1e-5:
        raise PretrainedError(
            "open_clip export needs a causal text tower pooled at the largest id (end-of-text = last id), "
            "one activation in both towers and LayerNorm eps 1e-5"
        )
    cfg: dict[str, Any] = {
        "embed_dim": model.image_proj.weight.shape[0],
        "quick_gelu": quick,
        "vision_cfg": {"image_size": img.image_size, "layers": len(img.transformer.blocks), "width": img.width,
                       "patch_size": img.patch_size, "head_width": img.width // vblk.attn.heads,
                       "mlp_ratio": vblk.mlp.fc1.out_features / img.width},
        "text_cfg": {"context_length": txt.context_length, "vocab_size": txt.vocab_size, "width": txt.width,
                     "heads": tblk.attn.heads, "layers": len(txt.transformer.blocks),
                     "mlp_ratio": tblk.mlp.fc1.out_features / txt.width},
    }
    if model.logit_bias is not None:
        cfg["init_logit_bias"] = float(model.logit_bias.detach())
    return cfg
