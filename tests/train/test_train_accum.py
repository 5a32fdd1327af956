"""Accumulation through the runner: accum_steps=4 (exact, GradCache) trains the same weights as
one batch; a task without the GradCache hooks gets a clear error for accum_mode=exact."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modalab.config import ConfigError, load
from modalab.experiment.runner import run

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml"
TINY = [
    "model.vision.width=16", "model.vision.depth=1", "model.text.width=16", "model.text.depth=1",
    "model.embed_dim=16", "train.steps=3", "train.batch_size=64", "train.eval_every=0",
    "train.num_threads=1", "run.progress=false", "data.augment=false", "data.captions=name",
    "optim.warmup_steps=0", "eval.batch_size=512",
]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(sorted((out / "checkpoints").glob("step_*"))[-1] / "model.safetensors"))


def test_exact_accumulation_matches_one_batch(tmp_path):
    one = run(load(RECIPE, TINY), tmp_path / "one")
    four = run(load(RECIPE, [*TINY, "train.accum_steps=4", "train.accum_mode=exact"]), tmp_path / "four")
    a, b = _weights(one), _weights(four)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_exact_mode_needs_the_task_hooks(tmp_path, monkeypatch):
    from modalab.tasks.contrastive import ContrastiveTask

    monkeypatch.delattr(ContrastiveTask, "embed_batch")
    with pytest.raises(ConfigError, match="accum_mode=exact.*embed_batch.*accum_mode=naive"):
        run(load(RECIPE, [*TINY, "train.accum_steps=2", "train.accum_mode=exact"]), tmp_path / "x")
