"""`train.num_threads`: set for the run, restored after it, and capped per process under torchrun."""

import os
from pathlib import Path

import torch

from modalab.config import load
from modalab.experiment.runner import run
from modalab.experiment.threads import oversubscribed, threads_per_process

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml"


def test_run_restores_the_callers_thread_count(tmp_path):
    torch.set_num_threads(1)
    seen = []
    out = run(load(RECIPE, ["train.steps=2", "train.eval_every=0", "train.num_threads=2", "run.progress=false",
                            "eval.prompts=['a handwritten {label}']"]), tmp_path / "r")
    seen.append(torch.get_num_threads())
    assert (out / "results.json").is_file()
    assert seen == [1]  # the recipe ran at 2 threads; the caller's setting is back


def test_threads_are_capped_by_cores_over_local_processes(monkeypatch):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads_per_process(2) == 2  # one process: what the recipe asks
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores))
    assert threads_per_process(2) == 1  # as many processes as cores: one thread each
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert threads_per_process(3) == 3


def test_oversubscribed_warns_only_when_other_work_fills_the_cores():
    assert oversubscribed(2, load=0.3, cores=2) is None  # idle: both cores are free
    assert oversubscribed(2, load=1.0, cores=2) is None  # e.g. the calling process itself: not a full machine
    assert oversubscribed(1, load=9.0, cores=2) is None  # one thread never waits for another
    msg = oversubscribed(2, load=5.4, cores=2)
    assert msg is not None and "load average 5.4 on 2 cores" in msg and "train.num_threads=1" in msg
    assert oversubscribed(4, load=3.0, cores=16) is None and oversubscribed(4, load=16.5, cores=16) is not None
