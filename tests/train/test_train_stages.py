"""Stages through the runner: only the stage's trainable parameters move, and a resume exactly at
a stage boundary (optimizer saved in the old stage) reproduces the uninterrupted weights."""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from modalab.config import load
from modalab.experiment.runner import run

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml"
TINY = [
    "model.vision.width=16", "model.vision.depth=1", "model.text.width=16", "model.text.depth=1",
    "model.embed_dim=16", "train.steps=4", "train.batch_size=32", "train.eval_every=0",
    "train.checkpoint_every=2", "train.num_threads=1", "run.progress=false", "eval.batch_size=512",
    'train.stages=[{steps: 2, trainable: ["*"]}, {steps: 2, trainable: ["image_proj.*"], lr: {"image_proj.*": 0.01}}]',
]


def _w(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"step_{step:08d}" / "model.safetensors"))


def test_stages_freeze_and_resume_at_boundary(tmp_path):
    out = run(load(RECIPE, TINY), tmp_path / "a")
    a2, a4 = _w(out, 2), _w(out, 4)
    moved = {k for k in a2 if not torch.equal(a2[k], a4[k])}
    assert moved == {"image_proj.weight"}
    events = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in events if e.get("event") == "stage"] == [0, 1]
    shutil.rmtree(out / "checkpoints" / "step_00000004")
    (out / "results.json").unlink()
    run(load(RECIPE, TINY), out, resume=True)
    b4 = _w(out, 4)
    assert all(torch.equal(a4[k], b4[k]) for k in a4)
