"""Region-phrase contrast on digit scenes through the contrastive task: boxes collated with padding
and a mask, region features equal to a plain per-box mean of the model's patch tokens, boxes that
hold no patch counted, and clip_scenes_regions.yaml running 5 steps with the regional level on."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from modalab.config import load
from modalab.data.region_batch import collate_regions
from modalab.data.sample import Sample
from modalab.experiment.rundir import RunDir
from modalab.experiment.runner import run
from modalab.tasks.contrastive import ContrastiveTask

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "clip_scenes_regions.yaml"
SMOKE = [
    "train.batch_size=8", "train.log_every=1", "run.progress=false", "data.image_size=16",
    "data.train_scenes=32", "data.test_scenes=16", "model.vision.depth=1", "model.text.depth=1",
    "model.vision.width=16", "model.text.width=16", "model.embed_dim=16", "eval.examples=0",
]


def _tok(texts):
    return torch.tensor([[len(t), 1] for t in texts])


def test_collate_regions_pads_masks_and_shares_identical_phrases():
    a = Sample("a", meta={"boxes": [(0, 0, 4, 4), (8, 8, 12, 12)], "phrases": ["a small red 3", "a large blue 7"]})
    b = Sample("b", meta={"boxes": [(4, 0, 8, 4)], "phrases": ["a small red 3"]})
    rb = collate_regions([a, b], _tok)
    assert rb.boxes.shape == (2, 2, 4) and rb.box_mask.tolist() == [[True, True], [True, False]]
    assert rb.phrases == ["a small red 3", "a large blue 7"] and rb.phrase_tokens.shape == (2, 2)
    assert rb.phrase_index.tolist() == [[0, 1], [0, -1]]
    assert rb.boxes[1, 0].tolist() == [4, 0, 8, 4] and rb.boxes[1, 1].abs().sum() == 0
    with pytest.raises(ValueError, match="sample c: 1 boxes but 2 phrases"):
        collate_regions([Sample("c", meta={"boxes": [(0, 0, 2, 2)], "phrases": ["x", "y"]})], _tok)
    with pytest.raises(ValueError, match="sample d: region-phrase contrast needs"):
        collate_regions([Sample("d", meta={})], _tok)
    with pytest.raises(ValueError, match="sample e: box 0"):
        collate_regions([Sample("e", meta={"boxes": [(3, 0, 2, 2)], "phrases": ["x"]})], _tok)


def _task(tmp_path, extra=()):
    recipe = load(RECIPE, [*SMOKE, "train.steps=5", *extra])
    (tmp_path / "r").mkdir()
    return ContrastiveTask(recipe, RunDir(tmp_path / "r"))


def test_region_embeddings_match_a_per_box_mean_and_count_empty_boxes(tmp_path):
    task = _task(tmp_path)
    assert task.wants_regions and not task.needs_tokens
    samples = [task.data.train[i] for i in range(4)]
    batch = task.collate_train(samples)
    batch.regions.boxes[0, 0] = torch.tensor([5.0, 5.0, 6.0, 6.0])  # between patch centres (2, 6, ...)
    task.model.eval()
    with torch.no_grad():
        emb = task.embed_batch(batch)
        tok = task.model.image_encoder.forward_tokens(batch.images)[:, 1:]  # (B, 16, W), 4x4 grid
    assert int(emb["regions_empty"]) == 1
    rows = []
    for i, s in enumerate(samples):
        for k, phrase in enumerate(s.meta["phrases"]):
            x0, y0, x1, y1 = batch.regions.boxes[i, k].tolist()
            inside = [r * 4 + c for r in range(4) for c in range(4)
                      if x0 <= c * 4 + 2 < x1 and y0 <= r * 4 + 2 < y1]
            if inside:
                rows.append((tok[i, inside].mean(0), phrase))
    ref = F.normalize(task.model.image_proj(torch.stack([r for r, _ in rows])), dim=-1)
    torch.testing.assert_close(emb["region_emb"], ref, rtol=1e-5, atol=1e-6)
    phrases = [batch.regions.phrases[j] for j in emb["phrase_index"].tolist()]
    assert phrases == [p for _, p in rows]
    task.model.train()
    loss, logs = task.loss_from_embeddings(task.embed_batch(batch), batch)
    assert logs["regions_empty"] == 1 and logs["regions"] == len(rows)
    loss.backward()
    assert float(task.model.image_proj.weight.grad.abs().sum()) > 0
    # the regional level adds to the global term: without regions the loss differs
    g, _ = task.loss_from_embeddings({k: v for k, v in task.embed_batch(batch).items() if "region" not in k
                                      and k != "phrase_emb" and k != "phrase_index"}, batch)
    assert abs(float(g.detach()) - float(loss.detach())) > 1e-4


def test_clip_scenes_regions_runs_five_steps(tmp_path):
    out = run(load(RECIPE, [*SMOKE, "train.steps=5"]), tmp_path / "run")
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [s for s in steps if "regions" in s]
    assert len(logged) == 5 and all(s["regions"] > 8 and s["regions_empty"] == 0 for s in logged)
    assert all(torch.isfinite(torch.tensor(s["loss"])) for s in logged)
    res = json.loads((out / "results.json").read_text())
    assert 0.0 <= res["probe/swap_attribute"] <= 1.0 and res["probe/swap_attribute_n"] > 0


def test_regional_weight_on_a_source_without_boxes_keeps_the_global_loss(tmp_path):
    recipe = load(RECIPE.parent / "clip_digits_multigranularity.yaml", ["train.steps=1"])
    (tmp_path / "d").mkdir()
    task = ContrastiveTask(recipe, RunDir(tmp_path / "d"))
    assert not task.wants_regions and task.needs_tokens


def test_regions_refuse_micro_batches(tmp_path):
    from modalab.config import ConfigError

    with pytest.raises(ConfigError, match="train.accum_steps: 1"):
        _task(tmp_path, ["train.accum_steps=2"])
