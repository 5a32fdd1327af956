"""Gradient accumulation on variable-resolution batches: a packed batch splits into micro-batches
that are packed again (each encodes only its own images), and ``contrastive_varres`` supports exact
(GradCache) accumulation, so ``train.accum_steps`` keeps the whole batch's negatives."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modalab import registry
from modalab.config import load
from modalab.experiment.rundir import RunDir
from modalab.experiment.runner import run
from modalab.train.gradcache import split_batch, supports_exact

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TINY = ["model.vision.width=16", "model.vision.depth=1", "model.vision.heads=2", "model.text.width=16",
        "model.text.depth=1", "model.text.heads=2", "model.embed_dim=16", "train.num_threads=1",
        "run.progress=false", "data.augment=false", "data.captions=name"]


def _task(tmp_path, extra=()):
    recipe = load(RECIPES / "clip_digits_res_curriculum.yaml", [*TINY, *extra])
    return registry.build("task", recipe.task, recipe, RunDir.create(tmp_path / "r", "", "x"))


@pytest.mark.parametrize("layout", ["pack", "bucket", "pad"])
def test_micro_batches_encode_only_their_images_and_match_the_whole(tmp_path, layout):
    task = _task(tmp_path, ["train.steps=30", f"data.batching.layout={layout}"])
    task.model.eval()
    data = task.data.train
    whole = task.make_batch([data[i] for i in range(12)], step=12, train=True)  # mixed patch budgets
    parts = split_batch(whole, 3)
    assert [len(p) for p in parts] == [4, 4, 4] and [p.packed.num_images for p in parts] == [4, 4, 4]
    # each part holds only its own images' tokens: together exactly the whole batch's real tokens
    assert sum(int(p.packed.valid.sum()) for p in parts) == int(whole.packed.valid.sum())
    with torch.no_grad():
        full = task.encode_images(whole)
        got = torch.cat([task.encode_images(p) for p in parts])
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)
    assert [b for p in parts for b in p.budgets] == whole.budgets
    assert sum(p.mean_budget for p in parts) / 3 == pytest.approx(whole.mean_budget)


def test_fixed_resolution_batches_split_by_rows(tmp_path):
    task = _task(tmp_path, ["data.batching.resize=fixed", "data.batching.schedule=null"])
    data = task.data.train
    whole = task.make_batch([data[i] for i in range(8)], train=True)
    parts = split_batch(whole, 2)
    assert [p.images.shape[0] for p in parts] == [4, 4] and torch.equal(parts[1].images, whole.images[4:])


def test_the_task_offers_exact_accumulation(tmp_path):
    assert supports_exact(_task(tmp_path))


@pytest.mark.parametrize("layout", ["pack", "bucket"])
def test_exact_accumulation_equals_the_whole_batch(tmp_path, layout):
    """Two micro-batches of 16 (GradCache) train the same weights as one batch of 32."""
    over = [*TINY, "train.steps=3", "train.batch_size=32", "train.eval_every=0", "train.log_every=1",
            "optim.warmup_steps=0", f"data.batching.layout={layout}"]
    one = run(load(RECIPES / "clip_digits_res_curriculum.yaml", over), tmp_path / "one")
    two = run(load(RECIPES / "clip_digits_res_curriculum.yaml", [*over, "train.accum_steps=2"]), tmp_path / "two")
    logs = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "accumulation" and r["mode"] == "exact" for r in logs)
    w = [load_file(str(sorted((r / "checkpoints").glob("step_*"))[-1] / "model.safetensors")) for r in (one, two)]
    worst = max((w[0][k] - w[1][k]).abs().max().item() for k in w[0])
    assert worst < 1e-5, worst
