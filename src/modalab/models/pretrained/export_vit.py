"""A modalab :class:`~modalab.vision.clip_vit.PretrainedViT` in ViT layout out as a transformers
``ViTModel`` folder (``save_pretrained`` + ``preprocessor_config.json``), so ``model.vision.pretrained:
hf:DIR`` (and ``ViTModel.from_pretrained``) load it.

Only towers in ViT's own layout can be written: class token, patch bias, no pre-norm, exact GELU,
class-token pooling, no head (the key map is the loader's, ``hf_towers.vit_keymap``, run backwards).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch.nn.functional as F

from modalab.models.pretrained.hf_towers import vit_keymap
from modalab.models.pretrained.source import PretrainedError
from modalab.vision.clip_vit import PretrainedViT


def vit_layout(tower: PretrainedViT) -> dict[str, object]:
    """``ViTConfig`` arguments of ``tower``; an error naming what ViT cannot hold."""
    why = []
    if tower.cls_token is None:
        why.append("no class token")
    if tower.patch_embed.bias is None:
        why.append("patch convolution without bias")
    if tower.pre_norm is not None:
        why.append("a pre-norm (CLIP)")
    if tower.head is not None or not isinstance(tower.pool, str):
        why.append("a pooling module or head")
    blk = tower.transformer.blocks[0]
    if blk.mlp.act is not F.gelu:
        why.append("an activation other than exact GELU")
    if why:
        raise PretrainedError(f"this ViT has no transformers ViTModel equivalent: {', '.join(why)}")
    return dict(image_size=tower.image_size, patch_size=tower.patch_size, num_channels=tower.patch_embed.in_channels,
                hidden_size=tower.width, num_hidden_layers=len(tower.transformer.blocks),
                num_attention_heads=blk.attn.heads, intermediate_size=blk.mlp.fc1.out_features,
                hidden_act="gelu", layer_norm_eps=blk.norm1.eps, qkv_bias=True,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def hf_vit(tower: PretrainedViT):  # type: ignore[no-untyped-def]
    """A transformers ``ViTModel`` (no pooler) holding ``tower``'s weights, strictly loaded."""
    import transformers

    cfg = vit_layout(tower)
    model = transformers.ViTModel(transformers.ViTConfig(**cfg), add_pooling_layer=False)
    n, d = tower.pos_embed.shape
    km = vit_keymap(int(cfg["num_hidden_layers"]), {}, "")
    state = km.to_theirs(tower.state_dict(), {"embeddings.cls_token": (1, 1, d),
                                              "embeddings.position_embeddings": (1, n, d)})
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "mask_token" not in k]
    if missing or unexpected:
        raise PretrainedError(f"export to ViTModel: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


def preprocessor_config(size: int, mean: list[float], std: list[float]) -> dict[str, object]:
    """transformers' ``ViTImageProcessor`` settings: exact resize to ``size``, rescale, mean/std."""
    return {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": size, "width": size},
            "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(mean), "image_std": list(std)}


def export_vit_hf(tower: PretrainedViT, out: Path, mean: list[float], std: list[float]) -> Path:
    """Write ``tower`` as a ``ViTModel`` folder with its preprocessor to ``out`` (via ``out.partial``)."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new output folder")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_vit(tower).save_pretrained(str(tmp))
    pre = preprocessor_config(tower.image_size, mean, std)
    (tmp / "preprocessor_config.json").write_text(json.dumps(pre, indent=2), encoding="utf-8")
    os.replace(tmp, out)
    return out
