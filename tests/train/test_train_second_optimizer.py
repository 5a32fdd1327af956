"""A second optimiser (a GAN discriminator) is an engine feature: ``fit(..., second=...)`` gives the
same losses and weights as the plain two-optimiser loop (generator step, then discriminator step on
the detached generator output), and a ``None`` loss leaves the second part untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modalab.train.engine import LoopConfig, SecondOptimizer, fit


def _parts(seed: int = 0):
    torch.manual_seed(seed)
    gen = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4)).double()
    disc = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    batches = [torch.randn(6, 4, dtype=torch.float64) for _ in range(4)]
    return gen, disc, batches


def _g_loss(gen, disc, x):
    fake = gen(x)
    return (fake - x).pow(2).mean() - 0.1 * disc(fake).mean(), fake


def _d_loss(disc, x, fake):
    return torch.relu(1 - disc(x)).mean() + torch.relu(1 + disc(fake.detach())).mean()


def test_second_optimizer_matches_plain_two_optimizer_loop():
    start = 1  # the discriminator starts at step 1
    gen, disc, batches = _parts()
    opt_g, opt_d = torch.optim.SGD(gen.parameters(), lr=0.1), torch.optim.Adam(disc.parameters(), lr=0.01)
    ref_g, ref_d = [], []
    for step, x in enumerate(batches):  # the plain reference loop
        loss, fake = _g_loss(gen, disc, x)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        ref_g.append(float(loss.detach()))
        if step >= start:
            d = _d_loss(disc, x, fake)
            opt_d.zero_grad(set_to_none=True)
            d.backward()
            opt_d.step()
            ref_d.append(float(d.detach()))
    ref_params = [p.detach().clone() for p in [*gen.parameters(), *disc.parameters()]]

    gen, disc, batches = _parts()
    opt_g = torch.optim.SGD([{"params": list(gen.parameters()), "lr": 0.1, "base_lr": 0.1}])
    opt_d = torch.optim.Adam(disc.parameters(), lr=0.01)
    last: dict = {}

    def step_fn(x):
        loss, fake = _g_loss(gen, disc, x)
        last["fake"] = fake.detach()
        return loss, {}

    def d_fn(x, step):
        if step < start:
            return None
        d = _d_loss(disc, x, last["fake"])
        return d, {"d_loss": float(d.detach())}

    logs: list[dict] = []
    fit(gen, iter(batches), step_fn, opt_g,
        LoopConfig(steps=4, schedule="constant", grad_clip=None, log_every=1, progress=False),
        log=logs.append, second=SecondOptimizer(opt_d, d_fn))
    assert [r["loss"] for r in logs] == pytest.approx(ref_g, rel=1e-6)  # the engine logs float32
    assert "d_loss" not in logs[0] and [r["d_loss"] for r in logs[1:]] == ref_d
    for p, q in zip([*gen.parameters(), *disc.parameters()], ref_params):
        assert torch.equal(p.detach(), q)


def test_second_optimizer_gradients_are_synced():
    gen, disc, batches = _parts()
    synced: list[int] = []
    opt_d = torch.optim.SGD(disc.parameters(), lr=0.1)
    fit(gen, iter(batches[:1]), lambda x: (_g_loss(gen, disc, x)[0], {}),
        torch.optim.SGD([{"params": list(gen.parameters()), "lr": 0.1, "base_lr": 0.1}]),
        LoopConfig(steps=1, grad_clip=None, log_every=1, progress=False), log=lambda r: None,
        sync_grads=lambda ps: synced.append(len(ps)),
        second=SecondOptimizer(opt_d, lambda x, s: (_d_loss(disc, x, gen(x)), {})))
    assert synced == [len(list(gen.parameters())), len(list(disc.parameters()))]
