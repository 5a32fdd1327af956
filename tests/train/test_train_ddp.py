"""2-process CPU (gloo) training equals 1-process training on the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modalab.cli import main

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml")
# no randomness in the data (no augmentation, fixed captions, no masking), so the only
# difference between 1 and 2 processes is where the global batch is computed
TINY = [
    "model.vision.width=16", "model.vision.depth=1", "model.text.width=16", "model.text.depth=1",
    "model.embed_dim=16", "train.steps=4", "train.batch_size=64", "train.log_every=1",
    "train.eval_every=0", "train.num_threads=1", "run.progress=false", "data.augment=false",
    "data.captions=name", "optim.warmup_steps=0", "optim.lr=1.0e-3", "eval.batch_size=512",
]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(sorted((run / "checkpoints").glob("step_*"))[-1] / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("extra", [
    [], ["loss.name=siglip", "model.init_logit_bias=-10.0", "train.accum_steps=2"], ["train.strategy=fsdp"],
])
def test_two_process_gloo_equals_single_process(tmp_path, extra):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["run", RECIPE, "--out", str(one), *TINY, *extra]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "modalab", "run", RECIPE, "--nproc", "2", "--out", str(two),
                        *TINY, *extra], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = _weights(one), _weights(two)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst  # float32; the sums run in a different order
    assert (two / "run.json").read_text().count('"processes": 2') == 1
