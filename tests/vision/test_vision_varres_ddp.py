"""``contrastive_varres`` under torchrun: 2 CPU processes (gloo) train the same weights as one process
on the same global batches (NaViT packing, the resolution curriculum and multi-scale resizing on)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modalab.cli import main

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "clip_digits_res_curriculum.yaml")
# no randomness in the data (no augmentation, fixed captions, no token dropping): the processes differ
# from one only in where each image of the global batch is encoded and in the order of the sums
TINY = [
    "model.vision.width=16", "model.vision.depth=1", "model.vision.heads=2", "model.text.width=16",
    "model.text.depth=1", "model.text.heads=2", "model.embed_dim=16", "train.steps=6", "train.batch_size=32",
    "train.log_every=1", "train.eval_every=0", "train.num_threads=1", "run.progress=false",
    "data.augment=false", "data.captions=name", "optim.warmup_steps=0", "eval.batch_size=512",
]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(sorted((run / "checkpoints").glob("step_*"))[-1] / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["pack", "bucket"])
def test_two_processes_train_what_one_process_trains(tmp_path, layout):
    over = [*TINY, f"data.batching.layout={layout}"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["run", RECIPE, "--out", str(one), *over]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "modalab", "run", RECIPE, "--nproc", "2", "--out", str(two), *over],
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = _weights(one), _weights(two)
    assert set(a) == set(b)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst  # float32; the sums run in a different order
    assert max(v.abs().max().item() for v in a.values()) > 0.01  # real weights, not an empty model
    assert (two / "run.json").read_text().count('"processes": 2') == 1
