"""CLIP and SigLIP checkpoints (transformers ``CLIPModel`` / ``SiglipModel`` folders) as modalab
dual encoders, and back.

The weights are converted into modalab's own modules (:class:`~modalab.vision.clip_vit.PretrainedViT`,
:class:`~modalab.text.clip_text.PretrainedTextTransformer`, :class:`~modalab.models.two_tower.TwoTower`),
so a loaded checkpoint trains, evaluates and exports like any modalab model. transformers is used
only to read ``config.json`` with its defaults filled in.

Layouts: CLIP = class token, no patch bias, pre-norm before the blocks, quick GELU (OpenAI),
causal text attention pooled at end-of-text, bias-free projections, learned 1/tau.
SigLIP = no class token, patch bias, attention-pooling head, tanh GELU, bidirectional text pooled
at the last position then a linear head (the text "projection", with bias), no image projection,
learned 1/tau and bias.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from modalab.models.pretrained.keymap import KeyMap
from modalab.models.pretrained.source import PretrainedError, activation, hf_config, hf_state_dict
from modalab.models.two_tower import TwoTower
from modalab.text.clip_text import PretrainedTextTransformer
from modalab.vision.clip_vit import MapHead, PretrainedViT

DUAL_TYPES = ("clip", "siglip")


def auto_config(folder: Path) -> Any:
    """transformers' config object for ``folder`` (defaults filled in)."""
    try:
        from transformers import AutoConfig
    except ImportError:
        raise PretrainedError(
            f"{folder}: reading Hugging Face checkpoints needs the [hf] extra: pip install 'modalab[hf]'"
        ) from None
    hf_config(folder)  # a clear error when config.json is missing or not a transformers config
    return AutoConfig.from_pretrained(str(folder))


def blocks_map(km: KeyMap, ours: str, theirs: str, depth: int) -> None:
    """CLIP/SigLIP encoder layers ``{theirs}.layers.i`` -> ``{ours}.blocks.i``."""
    for i in range(depth):
        o, t = f"{ours}.blocks.{i}", f"{theirs}.layers.{i}"
        km.norm(f"{o}.norm1", f"{t}.layer_norm1")
        km.qkv(f"{o}.attn.qkv", f"{t}.self_attn.q_proj", f"{t}.self_attn.k_proj", f"{t}.self_attn.v_proj")
        km.linear(f"{o}.attn.proj", f"{t}.self_attn.out_proj")
        km.norm(f"{o}.norm2", f"{t}.layer_norm2")
        km.linear(f"{o}.mlp.fc1", f"{t}.mlp.fc1")
        km.linear(f"{o}.mlp.fc2", f"{t}.mlp.fc2")


# ----------------------------------------------------------------------------- vision tower


def vision_tower(vc: Any, model_type: str) -> PretrainedViT:
    """An untrained :class:`PretrainedViT` shaped like a CLIP/SigLIP vision config."""
    act = activation(vc.hidden_act, f"{model_type} vision_config")
    siglip = model_type == "siglip"
    pool: str | nn.Module = "cls"
    if siglip:
        if not getattr(vc, "vision_use_head", True):
            raise PretrainedError("SigLIP vision towers without the attention-pooling head are not supported")
        pool = MapHead(vc.hidden_size, vc.num_attention_heads, vc.intermediate_size, act, vc.layer_norm_eps)
    return PretrainedViT(
        image_size=vc.image_size, patch_size=vc.patch_size, in_channels=vc.num_channels,
        width=vc.hidden_size, depth=vc.num_hidden_layers, heads=vc.num_attention_heads,
        mlp_hidden=vc.intermediate_size, act=act, norm_eps=vc.layer_norm_eps,
        class_token=not siglip, patch_bias=siglip, pre_norm=not siglip, pool=pool,
    )


def vision_keymap(model_type: str, depth: int, ours: str = "", theirs: str = "vision_model") -> KeyMap:
    o = f"{ours}." if ours else ""
    km = KeyMap()
    emb = f"{theirs}.embeddings"
    km.rename(f"{o}patch_embed.weight", f"{emb}.patch_embedding.weight")
    km.rename(f"{o}pos_embed", f"{emb}.position_embedding.weight")
    blocks_map(km, f"{o}transformer", f"{theirs}.encoder", depth)
    km.norm(f"{o}norm", f"{theirs}.post_layernorm")
    if model_type == "clip":
        km.rename(f"{o}cls_token", f"{emb}.class_embedding")
        km.norm(f"{o}pre_norm", f"{theirs}.pre_layrnorm")
    else:
        km.rename(f"{o}patch_embed.bias", f"{emb}.patch_embedding.bias")
        h = f"{theirs}.head"
        km.rename(f"{o}pool.probe", f"{h}.probe")
        km.in_proj(f"{o}pool.attention", f"{h}.attention")
        km.linear(f"{o}pool.attention.out_proj", f"{h}.attention.out_proj")
        km.norm(f"{o}pool.norm", f"{h}.layernorm")
        km.linear(f"{o}pool.mlp.fc1", f"{h}.mlp.fc1")
        km.linear(f"{o}pool.mlp.fc2", f"{h}.mlp.fc2")
    return km


# ----------------------------------------------------------------------------- text tower


def text_tower(tc: Any, model_type: str) -> PretrainedTextTransformer:
    act = activation(tc.hidden_act, f"{model_type} text_config")
    if model_type == "clip":
        pool = "argmax" if tc.eos_token_id == 2 else "eos_id"  # transformers' legacy rule
        causal = True
    else:
        pool, causal = "last", False
    return PretrainedTextTransformer(
        vocab_size=tc.vocab_size, context_length=tc.max_position_embeddings, width=tc.hidden_size,
        depth=tc.num_hidden_layers, heads=tc.num_attention_heads, mlp_hidden=tc.intermediate_size,
        act=act, norm_eps=tc.layer_norm_eps, causal=causal, pool=pool, eos_id=tc.eos_token_id,
    )


def text_keymap(depth: int, ours: str = "", theirs: str = "text_model") -> KeyMap:
    o = f"{ours}." if ours else ""
    km = KeyMap()
    km.rename(f"{o}token_embed.weight", f"{theirs}.embeddings.token_embedding.weight")
    km.rename(f"{o}pos_embed", f"{theirs}.embeddings.position_embedding.weight")
    blocks_map(km, f"{o}transformer", f"{theirs}.encoder", depth)
    km.norm(f"{o}norm", f"{theirs}.final_layer_norm")
    return km


# ----------------------------------------------------------------------------- dual encoder


def dual_keymap(model_type: str, vision_depth: int, text_depth: int) -> KeyMap:
    """The whole CLIPModel / SiglipModel <-> TwoTower key map."""
    km = KeyMap()
    for part in (vision_keymap(model_type, vision_depth, "image_encoder"), text_keymap(text_depth, "text_encoder")):
        km.renames.update(part.renames)
        km.fused.update(part.fused)
        km.split.update(part.split)
    km.rename("logit_scale", "logit_scale")
    if model_type == "clip":
        km.linear("image_proj", "visual_projection", bias=False)
        km.linear("text_proj", "text_projection", bias=False)
    else:
        km.linear("text_proj", "text_model.head")
        km.rename("logit_bias", "logit_bias")
    return km


def build_dual(cfg: Any, where: str) -> TwoTower:
    """An untrained :class:`TwoTower` shaped like a CLIPConfig / SiglipConfig."""
    mt = cfg.model_type
    if mt not in DUAL_TYPES:
        raise PretrainedError(
            f"{where}: model_type {mt!r} is not a dual encoder modalab converts; expected one of {DUAL_TYPES}"
        )
    vc, tc = cfg.vision_config, cfg.text_config
    img, txt = vision_tower(vc, mt), text_tower(tc, mt)
    if mt == "clip":
        image_proj: nn.Module = nn.Linear(vc.hidden_size, cfg.projection_dim, bias=False)
        text_proj: nn.Module = nn.Linear(tc.hidden_size, cfg.projection_dim, bias=False)
        bias = None
    else:
        if vc.hidden_size != tc.projection_size:
            raise PretrainedError(f"{where}: text projection_size {tc.projection_size} != "
                                  f"vision width {vc.hidden_size}")
        image_proj, text_proj, bias = nn.Identity(), nn.Linear(tc.hidden_size, tc.projection_size), 0.0
    # SigLIP's temperature is not clamped at 100 in its paper's training; allow a wider range
    return TwoTower(img, txt, image_proj, text_proj, max_logit_scale=100.0 if mt == "clip" else 1e4,
                    init_logit_bias=bias)


def load_hf_dual_encoder(folder: Path) -> TwoTower:
    """A CLIPModel or SiglipModel folder -> :class:`TwoTower` with its weights."""
    cfg = auto_config(folder)
    where = str(folder)
    with torch.device("meta"):  # no memory for random weights that are replaced at once
        model = build_dual(cfg, where)
    km = dual_keymap(cfg.model_type, cfg.vision_config.num_hidden_layers, cfg.text_config.num_hidden_layers)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    state = {k: v.float() for k, v in km.to_ours(hf_state_dict(folder), shapes, where).items()}
    model.load_state_dict(state, assign=True)  # the loaded tensors become the parameters
    return model.eval()


def dual_encoder_kind(model: TwoTower) -> str:
    """``clip`` or ``siglip`` for a TwoTower built of the pretrained layouts; error otherwise."""
    img, txt = model.image_encoder, model.text_encoder
    if not isinstance(img, PretrainedViT) or not isinstance(txt, PretrainedTextTransformer):
        raise PretrainedError(
            "export needs a dual encoder in the CLIP/SigLIP layout (model.pretrained=hf:DIR or model.name=clip); "
            f"this one has {type(img).__name__} / {type(txt).__name__} towers"
        )
    return "siglip" if isinstance(img.pool, MapHead) else "clip"
