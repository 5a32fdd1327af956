"""Kill test: SIGKILL a run at a random step, truncate its newest checkpoint, resume, and get the
same final weights and metrics as an uninterrupted run (bit-exact on CPU, one thread)."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modalab.cli import main
from tests.train.kill_helpers import KILLER

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml")
TINY = [
    "model.vision.width=16", "model.vision.depth=1", "model.text.width=16", "model.text.depth=1",
    "model.embed_dim=16", "train.steps=12", "train.batch_size=32", "train.checkpoint_every=3",
    "train.log_every=1", "train.eval_every=6", "train.num_threads=1", "run.progress=false",
    "optim.warmup_steps=2", "eval.batch_size=512",
]


def _losses(run: Path) -> list[tuple[int, float]]:
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if "loss" in r and "event" not in r]


def _final(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(sorted((run / "checkpoints").glob("step_*"))[-1] / "model.safetensors"))


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    kill_at = random.Random(os.getpid()).choice([7, 8, 10, 11])  # between checkpoints 6 and 9/12
    ref = tmp_path / "ref"
    assert main(["run", RECIPE, "--out", str(ref), *TINY]) == 0
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", KILLER, str(kill_at), "run", RECIPE, "--out", str(run), *TINY],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]  # killed by SIGKILL
    assert not (run / "results.json").exists()
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    assert [c.name for c in ckpts][-1] <= f"step_{kill_at:08d}"
    # damage the newest checkpoint: resume must fall back to the one before
    newest = ckpts[-1] / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match="truncated or corrupted"):
        assert main(["run", RECIPE, "--out", str(run), "--resume", *TINY]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["resumed_from"] == ckpts[-2].name
    a, b = _final(ref), _final(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-exact
    assert _losses(run) == _losses(ref)
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (ref, run))
    for k in ra:
        if "seconds" not in k:  # timings (wall, train CPU, in-loop evaluation) differ run to run
            assert ra[k] == rb[k], k


@pytest.mark.slow
def test_resume_without_checkpoint_starts_fresh_and_resume_after_finish_is_noop(tmp_path):
    run = tmp_path / "r"
    over = [*TINY, "train.steps=3", "train.eval_every=0"]
    assert main(["run", RECIPE, "--out", str(run), "--resume", *over]) == 0
    first = _final(run)
    losses = _losses(run)
    assert main(["run", RECIPE, "--out", str(run), "--resume", *over]) == 0  # resumes at step 3 = end
    assert all(torch.equal(first[k], v) for k, v in _final(run).items())
    assert _losses(run) == losses
