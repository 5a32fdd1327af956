"""The compositional-scenes recipes run end to end at smoke size: RGB scenes through the ViT
(in_channels 3), the probe per swap type in results.json, the example grid in the report, the
noise record saved, the hard-negative captions reaching the loss."""

import json
from pathlib import Path

import pytest

from modalab.config import load
from modalab.experiment.runner import run

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SMOKE = [
    "train.steps=2", "train.batch_size=8", "train.log_every=1", "run.progress=false", "data.image_size=16",
    "data.train_scenes=32", "data.test_scenes=16", "model.vision.depth=1", "model.text.depth=1",
    "model.vision.width=16", "model.text.width=16", "model.embed_dim=16", "eval.examples=4",
]


@pytest.mark.parametrize("name", ["clip_scenes.yaml", "clip_scenes_hard_negatives.yaml", "clip_scenes_levels.yaml",
                                  "clip_scenes_noise.yaml"])
def test_scenes_recipe_runs(name, tmp_path):
    out = run(load(RECIPES / name, SMOKE), tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    for kind in ("swap_attribute", "swap_object", "replace_relation", "count"):
        assert 0.0 <= res[f"probe/{kind}"] <= 1.0 and res[f"probe/{kind}_n"] > 0
        assert f"novel_probe/{kind}" in res
    assert "novel/image_to_text_R@1" in res and res["num_test"] == 16
    assert res["num_val"] == 4 and res["num_train"] == 28  # carve_val: 0.1 of the 32 scenes, rounded up
    assert 0.0 <= res["val_probe/swap_attribute"] <= 1.0
    assert "val_image_to_text_R@1" in res and not any(k.startswith("val_novel") for k in res)
    report = (out / "report.html").read_text()
    assert "Held-out examples" in report and report.count("data:image/png;base64") >= 4
    if "noise" in name:
        noise = json.loads((out / "artifacts" / "noise.json").read_text())
        assert res["noise_swapped"] == len(noise["swapped"]) == 6 and res["noise_dropped"] == 3


def test_hard_negatives_reach_the_loss(tmp_path):
    from modalab.tasks.contrastive import ContrastiveTask
    from modalab.experiment.rundir import RunDir

    recipe = load(RECIPES / "clip_scenes_hard_negatives.yaml", SMOKE)
    (tmp_path / "r").mkdir()
    task = ContrastiveTask(recipe, RunDir(tmp_path / "r"))
    batch = task.collate([task.data.train[i] for i in range(4)])
    assert batch.negatives.shape[:2] == (4, 4)  # L1, L2, L3, swap
    emb = task.embed_batch(batch)
    assert emb["neg_text_emb"].shape == (4, 4, 16)
    loss, _ = task.loss_from_embeddings(emb, batch)
    loss.backward()
    grads = [p.grad for p in task.model.text_encoder.parameters() if p.grad is not None]
    assert loss.item() > 0 and grads and any(float(g.abs().sum()) > 0 for g in grads)
