"""What ``--resume`` may do with an existing run directory.

- A run whose recorded process is still alive on this machine is never resumed (two processes
  would write one folder).
- A run with no valid checkpoint (none written yet, or every one truncated / corrupted) is not
  silently restarted at step 0 on top of its old ``metrics.jsonl``: ``--resume`` refuses, and
  ``--resume --restart`` starts over explicitly. A restart truncates ``metrics.jsonl`` and moves
  the unusable checkpoints aside (``checkpoints.before-restart-<time>``), and says both.

:func:`restore` puts a run back as its checkpoint left it (weights, optimizer, scaler, RNGs,
data position, task state) and drops the metrics logged after that checkpoint.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from modalab.config import ConfigError
from modalab.train import dist as D
from modalab.train.checkpoint import load_weights, set_rng_state
from modalab.train.loader import TrainStream

from modalab.errors import ResumeError
from modalab.experiment.liveness import run_process_state
from modalab.experiment.rundir import RunDir
from modalab.tasks.base import Resumable, implements


def prepare_resume(rd: RunDir, start: Path | None, restart: bool) -> None:
    """Check that ``rd`` can be resumed from ``start`` (None: no valid checkpoint); with
    ``restart`` and no valid checkpoint, clear the way for a fresh start in the same folder.
    Under torchrun only rank 0 calls it (``experiment/runner.py`` sends its verdict to the others)."""
    info = rd.read_run_info()
    if info.get("status") == "running" and info.get("pid") != os.getpid() \
            and run_process_state(info) == "alive":
        raise ResumeError(f"{rd.path}: the run is still in progress (pid {info.get('pid')} on "
                          f"{info.get('host') or (info.get('machine') or {}).get('host')}); stop it "
                          f"before resuming")
    if start is not None:
        return
    found = sorted(p.name for p in rd.checkpoints.glob("step_*")) if rd.checkpoints.is_dir() else []
    what = (f"its {len(found)} checkpoint(s) ({', '.join(found[-3:])}) are all truncated or corrupted"
            if found else "it wrote no checkpoint before it stopped")
    if not restart:
        raise ResumeError(
            f"{rd.path}: cannot resume: {what}. `--resume --restart` starts it over at step 0 in "
            f"this folder (metrics.jsonl is truncated), or run again with a new --out"
        )
    notes = []
    if found:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = rd.path / f"checkpoints.before-restart-{stamp}"
        rd.checkpoints.rename(aside)
        notes.append(f"unusable checkpoints moved to {aside.name}/")
    if rd.metrics_file.is_file():
        n = sum(1 for line in rd.metrics_file.read_text(encoding="utf-8").splitlines() if line.strip())
        rd.metrics_file.write_text("")
        notes.append(f"metrics.jsonl truncated ({n} record(s) dropped)")
    print(f"restart: {rd.path} starts over at step 0 ({what}); {'; '.join(notes) or 'nothing to clear'}",
          file=sys.stderr, flush=True)


def restore(path: Path, payload: dict, state: dict, model: torch.nn.Module, task: Any,
             optimizer: torch.optim.Optimizer, scaler: Any, stream: TrainStream, env: D.DistEnv,
             rd: RunDir, fsdp: bool = False) -> None:
    """Put model, optimizer, scaler, RNGs, data position and task state back as they were.

    Under FSDP every rank reads the full weights and the name-keyed optimizer state and keeps its
    shard, so an fsdp checkpoint loads at any process count."""
    from safetensors.torch import load_file

    if fsdp:
        if "optimizer_full" not in payload:
            raise ConfigError(f"{path}: written by a ddp run, its optimizer state cannot be sharded; "
                              f"resume with train.strategy=ddp")
        weights = load_file(str(path / "model.safetensors"))
        D.load_full_state(model, optimizer, weights, payload["optimizer_full"])
    else:
        if "optimizer_full" in payload:
            raise ConfigError(f"{path}: written by an fsdp run; resume with train.strategy=fsdp "
                              f"(under torchrun)")
        load_weights(path, model)
    for name, module in task.extra_modules().items():
        f = path / f"{name}.safetensors"
        if f.is_file():
            module.load_state_dict(load_file(str(f)))
    if "optimizer" in payload and not fsdp:
        optimizer.load_state_dict(payload["optimizer"])
    if scaler is not None and "scaler" in payload:
        scaler.load_state_dict(payload["scaler"])
    trainer = state.get("trainer", {})
    rngs = payload.get("rng", [])
    if len(rngs) == env.world:
        set_rng_state(rngs[env.rank])
    else:
        rd.log({"warning": f"{path.name} holds RNG states of {len(rngs)} process(es), this run has "
                           f"{env.world}; random streams restart from the seed"})
    if "data" in trainer:
        stream.load_state(trainer["data"])
    if implements(task, Resumable):
        task.load_state(state)
    step = int(state["step"])
    if step > 0:
        task.after_step(step - 1)  # step-dependent task state (e.g. curriculum progress)
    if env.main:
        truncate_metrics(rd, step)
        rd.log({"step": step, "event": "resumed", "checkpoint": path.name})


def truncate_metrics(rd: RunDir, step: int) -> None:
    """Drop records logged after the checkpoint (they will be logged again)."""
    from modalab.train.checkpoint import atomic_write_text

    f = rd.metrics_file
    if not f.is_file():
        return
    keep = []
    for line in f.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        if not isinstance(rec.get("step"), int) or rec["step"] <= step:
            keep.append(line)
    atomic_write_text(f, "".join(k + "\n" for k in keep))
