"""An in-loop evaluation must not move the training run: whatever it draws from the global RNGs
(torch, numpy, python) is undone, so eval_every changes the logged curve, never the weights."""

import random

import numpy as np
import torch
from torch import nn

from modalab.train.checkpoint import rng_preserved
from modalab.train.engine import LoopConfig, fit


def _train(eval_every: int) -> tuple[torch.Tensor, list[float]]:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.3), nn.Linear(16, 1))  # dropout draws every step
    opt = torch.optim.SGD([{"params": list(model.parameters()), "base_lr": 0.05, "lr": 0.05}])

    def batches():
        while True:  # batches drawn lazily from the global RNGs, between the evaluations
            yield torch.randn(8, 6) + float(np.random.rand()) + random.random()

    def evaluate(step: int) -> dict[str, float]:
        model.eval()
        x = torch.randn(32, 6)  # an evaluation that samples (prompts, crops, subsets ...)
        with torch.no_grad():
            y = float(model(x).mean())
        return {"val_x": y + float(np.random.rand()) + random.random()}

    logged: list[float] = []
    fit(model, batches(), lambda b: (model(b).pow(2).mean(), {}), opt,
        LoopConfig(steps=9, eval_every=eval_every, progress=False),
        log=lambda r: logged.append(r["val_x"]) if "val_x" in r else None, evaluate=evaluate)
    return torch.cat([p.detach().flatten() for p in model.parameters()]), logged


def test_eval_every_leaves_the_weights_bit_identical():
    w_off, none = _train(0)
    w_on, vals = _train(2)
    assert none == [] and len(vals) == 4  # steps 2, 4, 6, 8
    assert torch.equal(w_off, w_on)


def test_rng_preserved_restores_every_stream():
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    with rng_preserved():
        torch.rand(5), np.random.rand(5), random.random()
    a = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
