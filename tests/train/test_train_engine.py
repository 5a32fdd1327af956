"""The loop's guards and stages: non-finite steps are skipped and counted, too many stop the run;
stage boundaries switch trainable parameters and rebuild the optimizer keeping moments."""

import math

import pytest
import torch
from torch import nn

from modalab.train.engine import LoopConfig, LoopState, TrainingError, fit
from modalab.train.loader import EpochSampler
from modalab.train.precision import enable_grad_checkpointing
from modalab.train.stages import Stage, rebuild_optimizer, set_trainable, stage_index


def _setup():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    opt = torch.optim.SGD([{"params": list(model.parameters()), "base_lr": 0.1, "lr": 0.1}])
    return model, opt


def test_non_finite_steps_are_skipped_then_stop():
    model, opt = _setup()
    bad = {1, 2}
    logs = []

    def step_fn(b):
        loss = model(b).pow(2).mean()
        return (loss * float("nan") if step_fn.i in bad else loss), {}

    def batches():
        step_fn.i = -1
        while True:
            step_fn.i += 1
            yield torch.randn(8, 4)

    before = [p.clone() for p in model.parameters()]
    out = fit(model, batches(), step_fn, opt, LoopConfig(steps=4, progress=False, grad_clip=None),
              log=logs.append)
    assert out["skipped_steps"] == 2
    events = [r for r in logs if r.get("event") == "non_finite"]
    assert [e["step"] for e in events] == [1, 2] and math.isnan(events[0]["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    bad.update(range(100))
    with pytest.raises(TrainingError, match="3 consecutive steps.*temperature.*learning rate"):
        fit(model, batches(), step_fn, opt, LoopConfig(steps=10, max_bad_steps=3, progress=False),
            log=logs.append, state=LoopState())


def test_stages_switch_trainable_and_keep_moments():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    stages = [Stage(2, ("1.*",)), Stage(3, ("*",))]
    assert [stage_index(stages, s) for s in range(7)] == [0, 0, 1, 1, 1, 1, 1]
    set_trainable(model, stages[0].trainable)
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]
    make = lambda: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])  # noqa: E731
    opt = make()
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    moment = opt.state[model[1].weight]["exp_avg"].clone()
    set_trainable(model, stages[1].trainable)
    opt2 = rebuild_optimizer(opt, make)
    assert len(opt2.param_groups[0]["params"]) == 4
    assert torch.equal(opt2.state[model[1].weight]["exp_avg"], moment)
    with pytest.raises(ValueError, match="'nope.*' matches no parameter"):
        set_trainable(model, ["nope.*"])


def test_epoch_sampler_splits_ranks_and_resumes():
    full = EpochSampler(20, shuffle=True, seed=3).indices()
    r0, r1 = (EpochSampler(20, shuffle=True, seed=3, rank=r, world=2).indices() for r in (0, 1))
    assert sorted(r0 + r1) == sorted(full) and r0 == full[0::2]
    s = EpochSampler(20, shuffle=True, seed=3, rank=1, world=2)
    s.set_epoch(0, start=4)
    assert list(s) == r1[4:]
    s.set_epoch(1)
    assert list(s) != r1


def test_grad_checkpointing_patterns():
    from modalab.layers import Transformer

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.image_encoder = nn.Sequential(Transformer(8, 1, 2))
            self.text_encoder = Transformer(8, 1, 2)

    m = Two()
    assert enable_grad_checkpointing(m, ["image_encoder"]) == ["image_encoder.0"]
    assert not m.text_encoder.grad_checkpointing
    with pytest.raises(ValueError, match="reaches no module"):
        enable_grad_checkpointing(m, ["decoder"])


def test_bf16_with_grad_checkpointing_trains():
    from modalab.layers import Transformer

    torch.manual_seed(0)
    model = nn.Sequential(Transformer(16, 2, 2), nn.Flatten(), nn.Linear(16 * 4, 1))
    enable_grad_checkpointing(model, True)
    opt = torch.optim.AdamW([{"params": list(model.parameters()), "base_lr": 1e-2, "lr": 1e-2}])
    x, y = torch.randn(32, 4, 16), torch.randn(32, 1)

    def step_fn(b):
        out = model(b[0])
        assert out.dtype == torch.bfloat16  # autocast is on
        return (out.float() - b[1]).pow(2).mean(), {}

    logs = []
    fit(model, iter([(x, y)] * 30), step_fn, opt, LoopConfig(steps=30, precision="bf16", log_every=10,
        progress=False), log=logs.append, batch_size=lambda b: len(b[0]))
    assert logs[-1]["loss"] < logs[0]["loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_train_stream_positions_and_plain_iterables():
    from torch.utils.data import DataLoader

    from modalab.train.loader import TrainStream

    data = list(range(10))
    s = TrainStream(DataLoader(data, batch_size=2, shuffle=True), local_batch=2, seed=0)
    it = iter(s)
    first = [next(it).tolist() for _ in range(7)]  # 5 batches per epoch: into epoch 1
    assert s.state() == {"epoch": 1, "batch": 2}
    r = TrainStream(DataLoader(data, batch_size=2, shuffle=True), local_batch=2, seed=0)
    r.load_state({"epoch": 0, "batch": 3})
    assert [next(iter(r)).tolist()] == [first[3]]
    plain = TrainStream([[1], [2], [3]], local_batch=1, seed=0)  # any iterable: skipped by reading
    plain.load_state({"epoch": 0, "batch": 2})
    assert next(iter(plain)) == [3]
    with pytest.raises(ValueError, match="yielded no batch"):
        next(iter(TrainStream([], local_batch=1, seed=0)))
