"""``grad_norm`` / ``clip_gradients`` use fused (foreach) calls: bit for bit the plain loops.

The reference is the loop the functions used before (``g.float().norm()`` per tensor, stacked, and
``g.mul_(coef)`` per tensor), on the gradients of a real model (the digits CLIP model's shapes)
and on mixed dtypes; seeded recipe results must not move by a bit.
"""

import torch

from modalab.train.optim import clip_gradients, grad_norm


def _params(seed: int, dtypes=(torch.float32,)) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(96, 48), (96,), (288, 96), (288,), (96, 96), (192, 96), (192,), (96, 192), (64, 96), ()]
    ps = []
    for i, s in enumerate(shapes * 4):
        dt = dtypes[i % len(dtypes)]
        p = torch.nn.Parameter(torch.zeros(s, dtype=dt))
        p.grad = (torch.randn(s, generator=g) * 10 ** (-(i % 5))).to(dt)
        ps.append(p)
    ps.append(torch.nn.Parameter(torch.zeros(3)))  # no gradient: skipped
    return ps


def _reference_norm(params) -> float:
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.stack(norms).norm().pow(2).sqrt().item()


def test_grad_norm_is_bitwise_the_loop():
    for dtypes in ((torch.float32,), (torch.float32, torch.bfloat16, torch.float64)):
        ps = _params(0, dtypes)
        assert grad_norm(ps) == _reference_norm(ps)


def test_clip_is_bitwise_the_loop_and_leaves_small_gradients_alone():
    ps, ref = _params(1, (torch.float32, torch.bfloat16)), _params(1, (torch.float32, torch.bfloat16))
    total = grad_norm(ps)
    assert total > 0.5
    clip_gradients(ps, 0.5, total)
    coef = 0.5 / (total + 1e-6)
    for p, q in zip(ps, ref):
        if q.grad is not None:
            q.grad.mul_(coef)
            assert torch.equal(p.grad, q.grad)
    assert abs(grad_norm(ps) - 0.5) < 1e-3
    before = [p.grad.clone() for p in ps if p.grad is not None]
    clip_gradients(ps, 10.0, grad_norm(ps))  # under the limit: untouched
    assert all(torch.equal(a, p.grad) for a, p in zip(before, [p for p in ps if p.grad is not None]))
