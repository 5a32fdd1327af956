"""TensorBoard logging: a tiny run with train.tensorboard=true writes the logged scalars to an
event file that TensorBoard reads back; without the package the run warns and keeps metrics.jsonl."""

import json
import sys
from pathlib import Path

import pytest

from modalab.cli import main
from modalab.experiment.rundir import RunDir
from modalab.experiment.loggers import Loggers

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml")
TINY = [
    "model.vision.width=16", "model.vision.depth=1", "model.text.width=16", "model.text.depth=1",
    "model.embed_dim=16", "train.steps=4", "train.batch_size=32", "train.log_every=1",
    "train.eval_every=4", "train.num_threads=1", "run.progress=false", "optim.warmup_steps=1",
]


def test_tiny_run_writes_scalars_tensorboard_reads_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["run", RECIPE, "--out", str(out), "train.tensorboard=true", *TINY]) == 0
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    assert {"loss", "lr", "grad_norm"} <= set(acc.Tags()["scalars"])
    logged = {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if "loss" in r and "event" not in r}
    tb = {e.step: e.value for e in acc.Scalars("loss")}
    assert sorted(tb) == sorted(logged) == [1, 2, 3, 4]
    assert all(abs(tb[s] - logged[s]) < 1e-5 * max(1.0, abs(logged[s])) for s in tb)  # float32 in the event file


def test_without_tensorboard_the_run_warns_and_logs_jsonl(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    rd = RunDir.create(tmp_path / "run", str(tmp_path), "x")
    sinks = Loggers(rd, ["jsonl", "tensorboard"], "x", {})
    sinks.log({"step": 1, "loss": 0.5})
    sinks.finish()
    recs = [json.loads(l) for l in rd.metrics_file.read_text().splitlines()]
    assert "tensorboard is not installed" in recs[0]["warning"] and recs[1]["loss"] == 0.5
    assert "warning: run.loggers has 'tensorboard' but tensorboard is not installed" in capsys.readouterr().err
    assert not (rd.path / "tensorboard").exists()
