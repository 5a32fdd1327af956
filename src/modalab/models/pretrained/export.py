"""modalab dual encoders out, in the layouts others load: a transformers ``CLIPModel`` /
``SiglipModel`` folder (``save_pretrained``) or an open_clip state dict with its model config.

Only dual encoders whose towers are in the pretrained layouts can be written
(:func:`~modalab.models.pretrained.hf_clip.dual_encoder_kind` says why not otherwise): a run
fine-tuned from ``model.pretrained`` is. A from-scratch ``two_tower`` (patch bias, no pre-norm,
mean-pooled text) has no CLIP equivalent, and the error says so rather than writing something else.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modalab.models.pretrained.hf_clip import dual_encoder_kind, dual_keymap
from modalab.models.pretrained.preprocess import PixelAdapter
from modalab.models.pretrained.source import PretrainedError, activation_name
from modalab.models.two_tower import TwoTower
from modalab.train.checkpoint import atomic_write_bytes, atomic_write_text

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "spiece.model", "preprocessor_config.json")


def plain_dual_encoder(model: TwoTower) -> TwoTower:
    """The same model without the :class:`PixelAdapter` a recipe puts around a pretrained image tower."""
    img = model.image_encoder.tower if isinstance(model.image_encoder, PixelAdapter) else model.image_encoder
    out = TwoTower(img, model.text_encoder, model.image_proj, model.text_proj)
    out.logit_scale = model.logit_scale
    out.logit_bias = model.logit_bias
    return out


def _tower_config(model: TwoTower, kind: str) -> dict[str, Any]:
    img, txt = model.image_encoder, model.text_encoder
    vb, tb = img.transformer.blocks[0], txt.transformer.blocks[0]
    vision = dict(hidden_size=img.width, intermediate_size=vb.mlp.fc1.out_features,
                  num_hidden_layers=len(img.transformer.blocks), num_attention_heads=vb.attn.heads,
                  num_channels=img.patch_embed.in_channels, image_size=img.image_size, patch_size=img.patch_size,
                  hidden_act=activation_name(vb.mlp.act), layer_norm_eps=vb.norm1.eps)
    text = dict(vocab_size=txt.vocab_size, hidden_size=txt.width, intermediate_size=tb.mlp.fc1.out_features,
                num_hidden_layers=len(txt.transformer.blocks), num_attention_heads=tb.attn.heads,
                max_position_embeddings=txt.context_length, hidden_act=activation_name(tb.mlp.act),
                layer_norm_eps=tb.norm1.eps)
    if kind == "clip":
        if txt.pool not in ("eos_id", "argmax") or not txt.causal:
            raise PretrainedError("CLIP export needs a causal text tower pooled at end-of-text")
        eos = 2 if txt.pool == "argmax" else int(txt.eos_id)  # transformers reads eos 2 as "argmax"
        if txt.pool == "eos_id" and eos == 2:
            raise PretrainedError("end-of-text id 2 would be read by transformers as argmax pooling")
        text.update(eos_token_id=eos, bos_token_id=min(eos, txt.vocab_size - 1), pad_token_id=eos)
    else:
        text.update(projection_size=model.text_proj.out_features)
    return {"vision_config": vision, "text_config": text}


def hf_model(model: TwoTower) -> nn.Module:
    """A transformers CLIPModel / SiglipModel holding ``model``'s weights (strictly loaded)."""
    import transformers

    model = plain_dual_encoder(model)
    kind = dual_encoder_kind(model)
    cfgs = _tower_config(model, kind)
    if kind == "clip":
        cfg = transformers.CLIPConfig(**cfgs, projection_dim=model.image_proj.out_features,
                                      logit_scale_init_value=float(model.logit_scale.detach()))
        hf = transformers.CLIPModel(cfg)
        shapes = {"logit_scale": ()}
    else:
        if not isinstance(model.image_proj, nn.Identity) or model.logit_bias is None:
            raise PretrainedError("SigLIP export needs no image projection and a logit bias")
        hf = transformers.SiglipModel(transformers.SiglipConfig(**cfgs))
        shapes = {"logit_scale": (1,), "logit_bias": (1,)}
    km = dual_keymap(kind, len(model.image_encoder.transformer.blocks), len(model.text_encoder.transformer.blocks))
    state = km.to_theirs(model.state_dict(), shapes)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise PretrainedError(f"export to {type(hf).__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return hf.eval()


def export_hf(model: TwoTower, out: Path, extras_from: Path | None = None) -> Path:
    """Write a ``save_pretrained`` folder to ``out`` (built in ``out.partial`` then renamed).

    ``extras_from``: a folder whose tokenizer and preprocessor files are copied alongside."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new output folder")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_model(model).save_pretrained(str(tmp))
    if extras_from is not None:
        for name in TOKENIZER_FILES:
            if (extras_from / name).is_file():
                shutil.copy2(extras_from / name, tmp / name)
    os.replace(tmp, out)
    return out


def export_open_clip(model: TwoTower, out: Path, preprocess: dict[str, Any] | None = None,
                     extras_from: Path | None = None) -> Path:
    """Write ``out/open_clip_pytorch_model.bin`` (state dict) and ``out/open_clip_config.json``."""
    from modalab.models.pretrained.open_clip import open_clip_config, open_clip_keymap

    model = plain_dual_encoder(model)
    if dual_encoder_kind(model) != "clip":
        raise PretrainedError("open_clip export supports CLIP-layout dual encoders (SigLIP: use --to hf)")
    cfg = open_clip_config(model)
    km = open_clip_keymap(len(model.image_encoder.transformer.blocks), len(model.text_encoder.transformer.blocks),
                          model.logit_bias is not None)
    state = km.to_theirs(model.state_dict(), {"logit_scale": ()})
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new output folder")
    out.mkdir(parents=True)
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(out / "open_clip_pytorch_model.bin", buf.getvalue())
    pre: dict[str, Any] = {}
    if preprocess:
        pre = {"mean": preprocess.get("image_mean"), "std": preprocess.get("image_std")}
    atomic_write_text(out / "open_clip_config.json", json.dumps({"model_cfg": cfg, "preprocess_cfg": pre}, indent=2))
    if extras_from is not None:
        for name in TOKENIZER_FILES:
            if (extras_from / name).is_file() and name != "preprocessor_config.json":
                shutil.copy2(extras_from / name, out / name)
    return out
