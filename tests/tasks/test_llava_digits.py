"""recipes/llava_digits.yaml end to end on tiny pretrained folders (4 steps): frozen ViTModel and
GPT-2 folders, MLP projector in stage 1, peft LoRA on the LM in stage 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modalab.config import from_dict, load
from modalab.experiment.runner import run
from tests.tasks.pretrained_towers import lm_folder, vit_folder

pytest.importorskip("transformers")
pytest.importorskip("peft")
RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_llava_digits_runs_with_frozen_towers_then_lora(tmp_path):
    vit, lm = vit_folder(tmp_path / "vit"), lm_folder(tmp_path / "lm")[0]
    from safetensors.torch import load_file

    before = load_file(str(lm / "model.safetensors"))
    recipe = load(RECIPES / "llava_digits.yaml", [
        f"model.encoder.pretrained=hf:{vit}", f"model.decoder.pretrained=hf:{lm}", "train.steps=4",
        "train.eval_every=0", "train.log_every=1", "train.batch_size=16", "train.num_threads=1",
        "run.progress=false",
    ]).to_dict()
    for stage in recipe["train"]["stages"]:
        stage["steps"] = 2
    out = run(from_dict(recipe), tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    assert 0.0 <= res["caption_digit_accuracy"] <= 1.0 and 0.0 <= res["val_caption_digit_accuracy"] <= 1.0
    by_stage = res["trainable_params_by_stage"]
    lora = by_stage["projector_lora"] - by_stage["projector"]
    assert lora == 2 * 8 * (32 + 96)  # rank 8 on c_attn (32 -> 96) in both blocks
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    lrs = [r for r in rows if "lr/decoder" in r]
    assert [r["stage"] for r in lrs] == [0.0, 0.0, 1.0, 1.0]
    assert all(r["lr/encoder"] == 0.0 for r in lrs) and lrs[0]["lr/decoder"] == 0.0 and lrs[-1]["lr/decoder"] > 0
    # the towers stayed frozen: the LM's base weights in the final checkpoint equal the folder's
    ckpt = sorted(out.glob("checkpoints/step_*/model.safetensors"))[-1]
    state = load_file(str(ckpt))
    base = {k: v for k, v in state.items() if k.startswith("decoder.") and "lora_" not in k}
    key = next(k for k in base if k.endswith("h.0.attn.c_attn.base_layer.weight"))
    assert torch.equal(base[key], before["transformer.h.0.attn.c_attn.weight"])
    assert any("lora_B" in k and state[k].abs().sum() > 0 for k in state)  # stage 2 moved LoRA
