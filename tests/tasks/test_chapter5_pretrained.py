"""recipes/chapter5/freezing.yaml and per_module_lr.yaml on tiny pretrained folders (a few steps per
arm): each arm of the recipe's own `# sweep:` grid does what its header says, and the caption task
writes per-test-item scores (artifacts/per_item.json) that compare's two-level bootstrap reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modalab.config import from_dict, load
from modalab.experiment.runner import run
from modalab.experiment.stats import collect_items
from modalab.experiment.sweep import expand_grid, header_args, parse_grid
from tests.tasks.pretrained_towers import lm_folder, vit_folder

pytest.importorskip("transformers")
RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "chapter5"


def _arms(recipe: Path):
    args = header_args(recipe)
    grid = [args[i + 1] for i, a in enumerate(args) if a == "--grid"]
    assert args[args.index("--seeds") + 1] == "6"
    return expand_grid(parse_grid(grid))


def _run(tmp_path: Path, recipe: Path, overrides: list[str], name: str, steps: int = 4) -> tuple[Path, list[dict]]:
    vit, lm = tmp_path / "vit", tmp_path / "lm"
    if not vit.exists():
        vit_folder(vit), lm_folder(lm)
    raw = load(recipe, [f"model.encoder.pretrained=hf:{vit}", f"model.decoder.pretrained=hf:{lm}",
                        "train.eval_every=0", "train.log_every=1", "train.batch_size=16", "train.num_threads=1",
                        "train.checkpoint_every=0", "optim.warmup_steps=0", "run.progress=false",
                        "data.test_fraction=0.05", "data.val_fraction=0.05", *overrides]).to_dict()
    raw["train"]["steps"] = steps
    for stage in raw["train"]["stages"]:  # the staged arm: half projector-only, half everything
        stage["steps"] = steps // 2
    out = run(from_dict(raw), tmp_path / name)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return out, [r for r in rows if "lr/decoder" in r]


def test_recipes_share_the_pretraining_split_and_train_everything():
    for name in ("freezing.yaml", "per_module_lr.yaml"):
        r = load(RECIPES / name)
        assert r.data.split_seed == 0 and r.model.lora is None and r.train.stages == []
        assert r.train.eval_every * 10 == r.train.steps  # the budget rule's val curve: 10 points


def test_freezing_arms_all_from_step_0_vs_projector_first(tmp_path):
    arms = _arms(RECIPES / "freezing.yaml")
    assert [a.params["train.stages"] == "[]" for a in arms] == [True, False]
    _, flat = _run(tmp_path, RECIPES / "freezing.yaml", list(arms[0].overrides), "all")
    assert all(r["lr/encoder"] > 0 and r["lr/connector"] > 0 and r["lr/decoder"] > 0 for r in flat)
    _, staged = _run(tmp_path, RECIPES / "freezing.yaml", list(arms[1].overrides), "staged")
    first, second = staged[:2], staged[2:]
    assert [r["stage"] for r in staged] == [0.0] * 2 + [1.0] * 2
    assert all(r["lr/encoder"] == 0 and r["lr/decoder"] == 0 and r["lr/connector"] > 0 for r in first)
    assert all(r["lr/encoder"] == r["lr/connector"] == r["lr/decoder"] > 0 for r in second)


def test_per_module_lr_arms_keep_the_chapter_ratios_and_per_item_scores_are_saved(tmp_path):
    arms = _arms(RECIPES / "per_module_lr.yaml")
    assert [a.params["optim.param_groups"] == "[]" for a in arms] == [True, False]
    out, one = _run(tmp_path, RECIPES / "per_module_lr.yaml", list(arms[0].overrides), "one", steps=2)
    assert all(r["lr/encoder"] == r["lr/connector"] == r["lr/decoder"] > 0 for r in one)
    _, groups = _run(tmp_path, RECIPES / "per_module_lr.yaml", list(arms[1].overrides), "groups", steps=2)
    for r in groups:  # chapter 5.2.1: encoder 1e-5 : connector 1e-4 : decoder 2e-5
        assert r["lr/encoder"] / r["lr/connector"] == pytest.approx(0.1)
        assert r["lr/decoder"] / r["lr/connector"] == pytest.approx(0.2)
    assert groups[-1]["lr/connector"] == pytest.approx(one[-1]["lr/connector"])  # connector at the base LR
    # the caption task saves per-test-item scores, which compare's two-level bootstrap reads
    res = json.loads((out / "results.json").read_text())
    saved = json.loads((out / "artifacts" / "per_item.json").read_text())
    hits = saved["metrics"]["caption_digit_accuracy"]
    assert saved["split"] == "test" and len(hits) == len(saved["ids"]) == res["num_test"] > 0
    assert set(hits) <= {0, 1} and np.mean(hits) == pytest.approx(res["caption_digit_accuracy"])
    assert saved["metrics"]["test_caption_digit_accuracy"] == hits
    items = collect_items([out], "caption_digit_accuracy")
    assert [len(v) for by_seed in items.values() for v in by_seed.values()] == [len(hits)]


