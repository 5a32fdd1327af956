"""recipes/blip2_digits.yaml end to end on tiny pretrained folders: stage 1 logs the three
BLIP-2 losses and trains only the Q-Former; stage 2 trains it through the frozen LM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modalab.config import from_dict, load
from modalab.experiment.runner import run
from tests.tasks.pretrained_towers import lm_folder, vit_folder

pytest.importorskip("transformers")
RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_blip2_digits_runs_stage1_objectives_then_the_lm(tmp_path):
    from safetensors.torch import load_file

    vit, lm = vit_folder(tmp_path / "vit"), lm_folder(tmp_path / "lm")[0]
    recipe = load(RECIPES / "blip2_digits.yaml", [
        f"model.encoder.pretrained=hf:{vit}", f"model.decoder.pretrained=hf:{lm}", "train.steps=6",
        "train.eval_every=0", "train.log_every=1", "train.batch_size=16", "train.num_threads=1",
        "model.connector.dim=32", "model.connector.depth=2", "model.connector.num_queries=4",
        "model.connector.embed_dim=16", "run.progress=false",
    ]).to_dict()
    for stage in recipe["train"]["stages"]:
        stage["steps"] = 2
    out = run(from_dict(recipe), tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    assert 0.0 <= res["itc_zeroshot_top1"] <= 1.0 and 0.0 <= res["val_itc_zeroshot_top1"] <= 1.0
    assert 0.0 <= res["caption_digit_accuracy"] <= 1.0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r and "stage" in r]
    stage1 = [r for r in steps if r["stage"] == 0.0]
    stage2 = [r for r in steps if r["stage"] >= 1.0]  # stage 2: projection, then Q-Former + LoRA
    assert len(stage1) == 2 and len(stage2) == 4
    assert all(r["loss_itc"] > 0 and r["loss_itm"] > 0 and r["loss_itg"] > 0 for r in stage1)
    assert all("loss_itc" not in r for r in stage2)
    state = load_file(str(sorted(out.glob("checkpoints/step_*/model.safetensors"))[-1]))
    vit_state = load_file(str(vit / "model.safetensors"))
    key = next(k for k in state if k.endswith("tower.patch_embed.weight"))
    assert torch.equal(state[key], vit_state["embeddings.patch_embeddings.projection.weight"])  # frozen
    lm_state = load_file(str(lm / "model.safetensors"))
    lm_key = next(k for k in state if k.startswith("decoder.") and k.endswith("h.1.mlp.c_fc.weight"))  # peft renames
    assert torch.equal(state[lm_key], lm_state["transformer.h.1.mlp.c_fc.weight"])
