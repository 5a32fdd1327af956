"""FSDP resume: a 2-process gloo FSDP2 run resumed from its middle checkpoint ends with the same
weights and metrics as the uninterrupted run (full weights + name-keyed optimizer state saved by
rank 0, every rank loads the full state and keeps its shard)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml")
TINY = [
    "model.vision.width=16", "model.vision.depth=1", "model.text.width=16", "model.text.depth=1",
    "model.embed_dim=16", "train.steps=8", "train.batch_size=64", "train.log_every=1",
    "train.eval_every=0", "train.num_threads=1", "run.progress=false", "train.checkpoint_every=4",
    "train.keep_checkpoints=3", "optim.warmup_steps=2", "eval.batch_size=512", "train.strategy=fsdp",
]


def _run(out: Path, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "modalab", "run", RECIPE, "--nproc", "2", "--out", str(out),
                        *TINY, *extra], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]


def _losses(run: Path) -> list[tuple[int, float]]:
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if "loss" in r and "event" not in r]


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp_two_process_resume_matches_uninterrupted(tmp_path):
    ref = tmp_path / "ref"
    _run(ref)
    payload = torch.load(ref / "checkpoints" / "step_00000004" / "trainer_state.pt", weights_only=True)
    assert "optimizer_full" in payload and len(payload["rng"]) == 2
    cut = tmp_path / "cut"
    shutil.copytree(ref, cut)
    shutil.rmtree(cut / "checkpoints" / "step_00000008")
    _run(cut, "--resume")
    assert '"event": "resumed", "checkpoint": "step_00000004"' in (cut / "metrics.jsonl").read_text()
    a = load_file(str(ref / "checkpoints" / "step_00000008" / "model.safetensors"))
    b = load_file(str(cut / "checkpoints" / "step_00000008" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:  # gloo reductions in the same order: bit-identical on CPU
        assert torch.equal(a[k], b[k]), k
    assert _losses(ref) == _losses(cut)
