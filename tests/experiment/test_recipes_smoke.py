"""Every contrastive recipe in recipes/ runs end to end at smoke size."""

import json
from pathlib import Path

import pytest

from modalab.config import load
from modalab.experiment.runner import run

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
CONTRASTIVE = [
    "clip_digits_siglip.yaml",
    "clip_digits_hard_negatives.yaml",
    "clip_digits_hard_only.yaml",
    "clip_digits_hcl.yaml",
    "clip_digits_mixed_80_20.yaml",
    "clip_digits_curriculum.yaml",
    "clip_digits_queue.yaml",
    "clip_digits_soft_labels.yaml",
    "clip_digits_multigranularity.yaml",
]
SMOKE = [
    "train.steps=4", "train.batch_size=32", "train.log_every=2", "run.progress=false",
    "model.vision.depth=1", "model.text.depth=1", "model.vision.width=32", "model.text.width=32",
]


@pytest.mark.parametrize("name", CONTRASTIVE)
def test_recipe_runs(name, tmp_path):
    out = run(load(RECIPES / name, SMOKE), tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    assert 0.0 <= res["zeroshot_top1"] <= 1.0 and res["num_test"] == 450
    assert 0.0 <= res["val_zeroshot_top1"] <= 1.0  # settings are chosen on val, carved from train
    assert "monitor/erank_image" in res
    assert (out / "report.html").is_file()


def test_queue_state_is_checkpointed(tmp_path):
    from safetensors.torch import load_file

    recipe = load(RECIPES / "clip_digits_queue.yaml", SMOKE)
    out = run(recipe, tmp_path / "run")
    ckpt = sorted((out / "checkpoints").iterdir())[-1]
    state = load_file(str(ckpt / "objective.safetensors"))
    assert recipe.loss.size == 256  # the recipe's queue (issue 20: chosen on val)
    assert state["image_queue.queue"].shape == (256, 64)
