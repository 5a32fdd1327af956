"""The dataset-format reader tests' fixture: a few-step training run (plain helpers: source_helpers.py)."""

import json
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SMOKE = [
    "train.steps=3", "train.batch_size=4", "train.log_every=1", "train.eval_every=0", "run.progress=false",
    "model.vision.depth=1", "model.text.depth=1", "model.vision.width=16", "model.text.width=16",
    "model.vision.heads=2", "model.text.heads=2", "model.embed_dim=16", "optim.warmup_steps=1",
    "data.image_size=8", "model.vision.patch_size=4", "eval.batch_size=16",
]


@pytest.fixture
def train_smoke():
    """Train clip_digits.yaml for 3 steps with ``overrides``; returns results.json."""
    from modalab.config import load
    from modalab.experiment.runner import run

    def go(tmp_path: Path, overrides: list[str]) -> dict:
        out = run(load(RECIPES / "clip_digits.yaml", [*SMOKE, *overrides]), tmp_path / "run")
        return json.loads((out / "results.json").read_text())

    return go
