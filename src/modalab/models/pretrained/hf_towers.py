"""Single pretrained towers from Hugging Face folders.

- image: the vision half of ``CLIPModel`` / ``CLIPVisionModel`` / ``SiglipModel`` /
  ``SiglipVisionModel`` folders, and ``ViTModel`` folders, converted into
  :class:`~modalab.vision.clip_vit.PretrainedViT` (ViT: no pre-norm, exact GELU, its own eps, the
  tanh pooler as ``head`` when the checkpoint has one);
- text: the text half of CLIP / SigLIP folders -> :class:`~modalab.text.clip_text.PretrainedTextTransformer`
  (without the projection: a tower's output is its width);
- audio: the encoder of a ``WhisperModel`` / ``WhisperForConditionalGeneration`` folder ->
  :class:`~modalab.audio.whisper_encoder.WhisperStyleEncoder` (its stored position table included).

Each loader returns ``(tower, width)``. Causal language models are wrapped, not converted
(``models/pretrained/causal_lm.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from modalab.audio.whisper_encoder import WhisperStyleEncoder, block as whisper_block
from modalab.models.pretrained.hf_clip import auto_config, text_keymap, text_tower, vision_keymap, vision_tower
from modalab.models.pretrained.keymap import KeyMap
from modalab.models.pretrained.source import PretrainedError, activation, hf_state_dict
from modalab.text.clip_text import PretrainedTextTransformer
from modalab.vision.clip_vit import PretrainedViT

VISION_TYPES = ("clip", "clip_vision_model", "siglip", "siglip_vision_model", "vit")
TEXT_TYPES = ("clip", "clip_text_model", "siglip", "siglip_text_model")


def _load(model: nn.Module, km: KeyMap, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict(km.to_ours(state, shapes, where))
    return model.eval()


def _only(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix.`` (the other tower's weights are left for its own loader)."""
    return {k: v for k, v in state.items() if k.startswith(prefix + ".")}


def _unsupported(folder: Path, model_type: str, allowed: tuple[str, ...], what: str) -> PretrainedError:
    return PretrainedError(
        f"{folder}/config.json: model_type {model_type!r} is not a supported {what}; expected one of {allowed}"
    )


# ----------------------------------------------------------------------------- image


def vit_keymap(depth: int, state: dict[str, torch.Tensor], prefix: str) -> KeyMap:
    """ViTModel names (transformers >= 5 in-memory layout, or the older on-disk one)."""
    km = KeyMap()
    p = f"{prefix}." if prefix else ""
    km.rename("cls_token", f"{p}embeddings.cls_token")
    km.rename("pos_embed", f"{p}embeddings.position_embeddings")
    km.linear("patch_embed", f"{p}embeddings.patch_embeddings.projection")
    legacy = f"{p}encoder.layer.0.attention.attention.query.weight" in state
    for i in range(depth):
        o = f"transformer.blocks.{i}"
        if legacy:
            t = f"{p}encoder.layer.{i}"
            a = f"{t}.attention.attention"
            km.qkv(f"{o}.attn.qkv", f"{a}.query", f"{a}.key", f"{a}.value")
            km.linear(f"{o}.attn.proj", f"{t}.attention.output.dense")
            km.linear(f"{o}.mlp.fc1", f"{t}.intermediate.dense")
            km.linear(f"{o}.mlp.fc2", f"{t}.output.dense")
        else:
            t = f"{p}layers.{i}"
            a = f"{t}.attention"
            km.qkv(f"{o}.attn.qkv", f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj")
            km.linear(f"{o}.attn.proj", f"{a}.o_proj")
            km.linear(f"{o}.mlp.fc1", f"{t}.mlp.fc1")
            km.linear(f"{o}.mlp.fc2", f"{t}.mlp.fc2")
        km.norm(f"{o}.norm1", f"{t}.layernorm_before")
        km.norm(f"{o}.norm2", f"{t}.layernorm_after")
    km.norm("norm", f"{p}layernorm")
    if f"{p}pooler.dense.weight" in state:
        km.linear("head.0", f"{p}pooler.dense")
    return km


def _vit(cfg: Any, state: dict[str, torch.Tensor], folder: Path) -> tuple[nn.Module, int]:
    if not getattr(cfg, "qkv_bias", True):
        raise PretrainedError(f"{folder}: ViT with qkv_bias=false is not supported")
    prefix = "vit" if any(k.startswith("vit.") for k in state) else ""
    state = _only(state, "vit") if prefix else {k: v for k, v in state.items() if not k.startswith("classifier.")}
    has_pooler = f"{prefix + '.' if prefix else ''}pooler.dense.weight" in state
    head = nn.Sequential(nn.Linear(cfg.hidden_size, cfg.hidden_size), nn.Tanh()) if has_pooler else None
    tower = PretrainedViT(
        image_size=cfg.image_size, patch_size=cfg.patch_size, in_channels=cfg.num_channels,
        width=cfg.hidden_size, depth=cfg.num_hidden_layers, heads=cfg.num_attention_heads,
        mlp_hidden=cfg.intermediate_size, act=activation(cfg.hidden_act, f"{folder} vit"),
        norm_eps=cfg.layer_norm_eps, class_token=True, patch_bias=True, pre_norm=False, head=head,
    )
    return _load(tower, vit_keymap(cfg.num_hidden_layers, state, prefix), state, str(folder)), cfg.hidden_size


def load_hf_vision_tower(folder: Path) -> tuple[nn.Module, int]:
    """CLIP / SigLIP / ViT image tower -> (tower, width); the tower maps (B, 3, S, S) -> (B, width)."""
    cfg = auto_config(folder)
    mt = cfg.model_type
    if mt not in VISION_TYPES:
        raise _unsupported(folder, mt, VISION_TYPES, "image tower")
    state = hf_state_dict(folder)
    if mt == "vit":
        return _vit(cfg, state, folder)
    family = mt.split("_")[0]
    vc = cfg.vision_config if mt in ("clip", "siglip") else cfg
    tower: PretrainedViT = vision_tower(vc, family)
    km = vision_keymap(family, vc.num_hidden_layers)
    return _load(tower, km, _only(state, "vision_model"), str(folder)), vc.hidden_size


# ----------------------------------------------------------------------------- text


def load_hf_text_tower(folder: Path) -> tuple[nn.Module, int]:
    """CLIP / SigLIP text tower (no projection) -> (tower, width); (B, L) ids -> (B, width).

    SigLIP's text ``head`` is part of its tower's output (transformers' ``pooler_output``)."""
    cfg = auto_config(folder)
    mt = cfg.model_type
    if mt not in TEXT_TYPES:
        raise _unsupported(folder, mt, TEXT_TYPES, "text tower")
    family = mt.split("_")[0]
    tc = cfg.text_config if mt in ("clip", "siglip") else cfg
    tower: PretrainedTextTransformer = text_tower(tc, family)
    km = text_keymap(tc.num_hidden_layers)
    state = _only(hf_state_dict(folder), "text_model")
    if family == "siglip":  # the pooled token goes through the text head (the "projection")
        seq = SiglipText(tower, nn.Linear(tc.hidden_size, tc.projection_size))
        km = KeyMap({f"tower.{k}": v for k, v in km.renames.items()}, {f"tower.{k}": v for k, v in km.fused.items()})
        km.linear("head", "text_model.head")
        return _load(seq, km, state, str(folder)), tc.projection_size
    return _load(tower, km, state, str(folder)), tc.hidden_size


class SiglipText(nn.Module):
    """SigLIP's text tower: the transformer, then the linear head on its pooled token."""

    def __init__(self, tower: PretrainedTextTransformer, head: nn.Linear) -> None:
        super().__init__()
        self.tower, self.head = tower, head
        self.context_length = tower.context_length

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(tokens))  # (B, projection_size)


# ----------------------------------------------------------------------------- audio


def load_hf_whisper_encoder(folder: Path) -> tuple[WhisperStyleEncoder, int]:
    """Whisper's encoder -> (encoder, d_model); log-mel (B, n_mels, 2 * max_source_positions)
    -> (B, max_source_positions, d_model)."""
    cfg = auto_config(folder)
    if cfg.model_type != "whisper":
        raise _unsupported(folder, cfg.model_type, ("whisper",), "audio encoder")
    if cfg.activation_function != "gelu":
        raise PretrainedError(f"{folder}: Whisper activation {cfg.activation_function!r}; modalab's encoder uses gelu")
    if cfg.encoder_ffn_dim % cfg.d_model:
        raise PretrainedError(f"{folder}: encoder_ffn_dim {cfg.encoder_ffn_dim} is not a multiple of "
                              f"d_model {cfg.d_model}")
    enc = WhisperStyleEncoder(n_mels=cfg.num_mel_bins, dim=cfg.d_model, depth=cfg.encoder_layers,
                              heads=cfg.encoder_attention_heads, max_frames=2 * cfg.max_source_positions)
    enc.blocks = nn.ModuleList(
        whisper_block(cfg.d_model, cfg.encoder_attention_heads, cfg.encoder_ffn_dim // cfg.d_model)
        for _ in enc.blocks
    )
    state = hf_state_dict(folder)
    prefix = "model.encoder" if any(k.startswith("model.encoder.") for k in state) else "encoder"
    state = _only(state, prefix)
    km = KeyMap()
    for c in ("conv1", "conv2"):
        km.linear(c, f"{prefix}.{c}")
    for i in range(cfg.encoder_layers):
        o, t = f"blocks.{i}", f"{prefix}.layers.{i}"
        km.norm(f"{o}.norm1", f"{t}.self_attn_layer_norm")
        km.qkv(f"{o}.attn.qkv", f"{t}.self_attn.q_proj", f"{t}.self_attn.k_proj", f"{t}.self_attn.v_proj")
        km.linear(f"{o}.attn.proj", f"{t}.self_attn.out_proj")
        km.norm(f"{o}.norm2", f"{t}.final_layer_norm")
        km.linear(f"{o}.mlp.fc1", f"{t}.fc1")
        km.linear(f"{o}.mlp.fc2", f"{t}.fc2")
    km.norm("ln_post", f"{prefix}.layer_norm")
    pos_key = f"{prefix}.embed_positions.weight"
    if pos_key not in state:
        raise PretrainedError(f"{folder}: missing weight {pos_key!r}")
    enc.pos = state.pop(pos_key).float().clone()  # the stored table (sinusoids in released checkpoints)
    _load(enc, km, state, str(folder))
    return enc, cfg.d_model
