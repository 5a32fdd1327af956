"""modalab's causal text decoder (:class:`~modalab.text.decoder.TextDecoder`) as a transformers
GPT-2 folder (``GPT2LMHeadModel``), so a language model trained here loads in any GPT-2 tooling.

The layouts match: token + learned position embeddings, pre-norm blocks (LayerNorm eps 1e-5),
fused-free q/k/v -> GPT-2's ``c_attn`` (Conv1D: weights stored (in, out), q|k|v concatenated),
exact GELU (``activation_function="gelu"``), final norm, output head tied to the token embedding.
Positions: modalab counts real tokens only; GPT-2 numbers positions 0..T-1, the same for
sequences without left padding. Decoders with adapters or cross-attention layers have no GPT-2
equivalent and are refused.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from modalab.models.pretrained.source import PretrainedError
from modalab.text.decoder import TextDecoder


def gpt2_state(dec: TextDecoder) -> tuple[dict[str, torch.Tensor], dict[str, int | float | str]]:
    """(GPT2LMHeadModel state dict, GPT2Config arguments) of ``dec``."""
    for i, blk in enumerate(dec.blocks):
        if blk.cross is not None or blk.adapter is not None:
            raise PretrainedError(f"decoder block {i} has cross-attention or an adapter; GPT-2 has neither")
        if any("lora" in n for n, _ in blk.named_parameters()):
            raise PretrainedError(f"decoder block {i} carries LoRA weights; merge them before exporting")
    sd = {k: v.detach() for k, v in dec.state_dict().items()}
    out = {"transformer.wte.weight": sd["tok_emb.weight"], "transformer.wpe.weight": sd["pos_emb.weight"],
           "transformer.ln_f.weight": sd["norm.weight"], "transformer.ln_f.bias": sd["norm.bias"],
           "lm_head.weight": sd["tok_emb.weight"]}
    for i in range(len(dec.blocks)):
        b, h = f"blocks.{i}", f"transformer.h.{i}"
        qkv_w = torch.cat([sd[f"{b}.attn.{n}.weight"] for n in ("q_proj", "k_proj", "v_proj")], 0)  # (3D, D)
        out[f"{h}.attn.c_attn.weight"] = qkv_w.T  # Conv1D: (in, out)
        out[f"{h}.attn.c_attn.bias"] = torch.cat([sd[f"{b}.attn.{n}.bias"] for n in ("q_proj", "k_proj", "v_proj")])
        out[f"{h}.attn.c_proj.weight"] = sd[f"{b}.attn.out_proj.weight"].T
        out[f"{h}.attn.c_proj.bias"] = sd[f"{b}.attn.out_proj.bias"]
        for ours, theirs in (("norm1", "ln_1"), ("norm2", "ln_2")):
            out[f"{h}.{theirs}.weight"], out[f"{h}.{theirs}.bias"] = sd[f"{b}.{ours}.weight"], sd[f"{b}.{ours}.bias"]
        out[f"{h}.mlp.c_fc.weight"], out[f"{h}.mlp.c_fc.bias"] = sd[f"{b}.mlp.fc1.weight"].T, sd[f"{b}.mlp.fc1.bias"]
        out[f"{h}.mlp.c_proj.weight"], out[f"{h}.mlp.c_proj.bias"] = (
            sd[f"{b}.mlp.fc2.weight"].T, sd[f"{b}.mlp.fc2.bias"])
    blk = dec.blocks[0]
    cfg = dict(vocab_size=dec.vocab_size, n_positions=dec.max_len, n_embd=dec.dim, n_layer=len(dec.blocks),
               n_head=blk.attn.num_heads, n_inner=blk.mlp.fc1.out_features, activation_function="gelu",
               layer_norm_epsilon=blk.norm1.eps, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
               tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return {k: v.contiguous().clone() for k, v in out.items()}, cfg


def export_decoder_hf(dec: TextDecoder, out: Path) -> Path:
    """Write ``dec`` as a GPT2LMHeadModel ``save_pretrained`` folder (via ``out.partial``)."""
    import transformers

    state, cfg = gpt2_state(dec)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight" and "attn.bias" not in k and "masked_bias" not in k]
    if missing or unexpected:
        raise PretrainedError(f"export to GPT-2: missing {missing[:5]}, unexpected {unexpected[:5]}")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new output folder")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.eval().save_pretrained(str(tmp))
    os.replace(tmp, out)
    return out
