"""FLIP unmasking tuning: ``model.vision.unmask_steps`` turns patch dropout off for the last steps."""

import json
from pathlib import Path

import pytest
import torch

from modalab import registry
from modalab.config import ConfigError, load
from modalab.experiment.rundir import RunDir
from modalab.experiment.runner import run
from modalab.vision.masking import unmasking_ratio

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "clip_digits_flip50.yaml"
SMALL = ["model.vision.width=32", "model.vision.depth=1", "model.text.width=32", "model.text.depth=1",
         "train.batch_size=32", "run.progress=false"]


def test_unmasking_ratio_schedule_and_errors():
    got = [unmasking_ratio(s, 6, 0.5, 2) for s in range(6)]
    assert got == [0.5, 0.5, 0.5, 0.5, 0.0, 0.0]
    assert [unmasking_ratio(s, 3, 0.75, 0) for s in range(3)] == [0.75] * 3
    for bad in (6, 7, -1):
        with pytest.raises(ValueError, match="unmask_steps"):
            unmasking_ratio(0, 6, 0.5, bad)


def test_tokens_per_image_drop_to_full_at_the_unmask_step(tmp_path):
    rec = load(RECIPE, [*SMALL, "train.steps=4", "model.vision.unmask_steps=2"])
    torch.manual_seed(0)
    task = registry.build("task", rec.task, rec, RunDir.create(tmp_path / "r", "", "x"))
    seen: list[int] = []
    task.model.image_encoder.transformer.register_forward_hook(lambda m, a, out: seen.append(a[0].shape[1]))
    batch = next(iter(task.train_loader()))
    logged = []
    for step in range(4):
        task.model.train()
        loss, _ = task.step(batch)
        loss.backward()
        logged.append(task.after_step(step)["patch_dropout"])
    assert seen == [9, 9, 17, 17]  # class token + 8 of 16 patches, then all 16 patches
    assert logged == [0.5, 0.5, 0.0, 0.0]


def test_resumed_task_keeps_the_unmasked_ratio(tmp_path):
    rec = load(RECIPE, [*SMALL, "train.steps=4", "model.vision.unmask_steps=2"])
    task = registry.build("task", rec.task, rec, RunDir.create(tmp_path / "a", "", "x"))
    for step in range(3):
        task.after_step(step)
    state = json.loads(json.dumps(task.state()))  # a checkpoint written after step 3 of 4
    fresh = registry.build("task", rec.task, rec, RunDir.create(tmp_path / "b", "", "x"))
    assert fresh.model.image_encoder.patch_dropout.ratio == 0.5
    fresh.load_state(state)
    assert fresh.model.image_encoder.patch_dropout.ratio == 0.0  # the last step stays unmasked


def test_unmask_steps_logged_in_metrics(tmp_path):
    rec = load(RECIPE, [*SMALL, "train.steps=5", "train.log_every=1", "train.eval_every=0",
                        "model.vision.unmask_steps=2"])
    out = run(rec, tmp_path / "r")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ratios = [(r["step"], r["patch_dropout"]) for r in rows if "loss" in r and "patch_dropout" in r]
    assert ratios == [(1, 0.5), (2, 0.5), (3, 0.5), (4, 0.0), (5, 0.0)]


def test_unmask_steps_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="unmask_step"):
        load(RECIPE, ["model.vision.unmask_step=2"])  # a typo is rejected by the strict schema
    with pytest.raises(ConfigError, match="unmask_steps"):
        load(RECIPE, ["model.vision.unmask_steps=-1"])
    no_flip = load(RECIPE, [*SMALL, "model.vision.patch_dropout=0.0", "model.vision.unmask_steps=2"])
    with pytest.raises(ValueError, match="needs model.vision.patch_dropout"):
        registry.build("task", no_flip.task, no_flip, RunDir.create(tmp_path / "a", "", "x"))
    too_many = load(RECIPE, [*SMALL, "train.steps=4", "model.vision.unmask_steps=4"])
    with pytest.raises(ValueError, match="below the 4 training steps"):
        registry.build("task", too_many.task, too_many, RunDir.create(tmp_path / "b", "", "x"))
