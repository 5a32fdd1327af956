"""The loop's timing summary: process CPU seconds next to wall seconds, and the wall seconds of the
in-loop evaluations, so that a speed comparison (FLIP's patch dropout) can read CPU time per run
and take the evaluations out."""

import time

import torch
from torch import nn

from modalab.train.engine import LoopConfig, fit


def _busy(seconds: float) -> None:
    """Burn process CPU for about ``seconds`` (a sleep would cost wall time only)."""
    t0 = time.process_time()
    x = 0
    while time.process_time() - t0 < seconds:
        x += 1


def test_summary_has_cpu_and_eval_seconds():
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD([{"params": list(model.parameters()), "base_lr": 0.1, "lr": 0.1}])

    def step_fn(b):
        _busy(0.02)
        return model(b).pow(2).mean(), {}

    def batches():
        while True:
            yield torch.randn(8, 4)

    evals = []

    def evaluate(step):
        evals.append(step)
        time.sleep(0.1)  # wall time only: no CPU
        return {"val_x": 0.0}

    out = fit(model, batches(), step_fn, opt, LoopConfig(steps=6, eval_every=2, progress=False),
              log=lambda r: None, evaluate=evaluate)
    assert evals == [2, 4]  # not at the last step: the runner evaluates there itself
    # two sleeps of 0.1 s: counted as evaluation wall time, not as CPU
    assert 0.2 <= out["eval_seconds_in_loop"] < out["train_seconds"]
    assert 0.0 <= out["eval_cpu_seconds_in_loop"] < 0.05  # sleeping evaluations cost no CPU
    # six steps each burning >= 0.02 s of CPU
    assert 0.12 <= out["train_cpu_seconds"]
    assert out["train_cpu_seconds"] < out["train_seconds"] - 0.15  # the sleeps are not CPU
