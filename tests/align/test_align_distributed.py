"""Global-batch losses across 2 gloo processes equal the single-process loss on the whole batch.

Conventions checked (see align/distributed.py): mean over ranks of the local losses = global loss;
each rank's embedding gradients = W * d(global loss)/d(its embeddings) (the gradients of
sum_r loss_r, which DDP's averaging turns into the global gradients); the per-rank gradients of
logit_scale / logit_bias sum to W * the global ones.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modalab.align.distributed import (
    all_gather_with_grad, gather_info_nce, gather_siglip, is_dist, ring_info_nce, ring_siglip,
    world_info,
)
from modalab.align.losses import info_nce, siglip
from modalab.train.dist import shutdown

B, D = 6, 5
VARIANTS = {
    "gather_info_nce": gather_info_nce,
    "ring_info_nce": ring_info_nce,
    "gather_siglip": gather_siglip,
    "ring_siglip": ring_siglip,
}


def _data(world: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x, y = (torch.nn.functional.normalize(
        torch.randn(world * B, D, generator=g, dtype=torch.float64), dim=1) for _ in range(2))
    labels = torch.randint(0, 4, (world * B,), generator=g)
    return x, y, labels


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.set_num_threads(1)
    clean = False
    try:
        x, y, labels = _data(world)
        sl = slice(rank * B, (rank + 1) * B)
        results = {"world_info": world_info(), "is_dist": is_dist()}
        # all-gather with gradient: d(sum of gathered * w)/dx = sum over ranks' w for my rows
        xl = x[sl].clone().requires_grad_()
        w = torch.arange(world * B * D, dtype=torch.float64).view(world * B, D) * (rank + 1)
        (all_gather_with_grad(xl) * w).sum().backward()
        results["gather_grad"] = xl.grad
        for name, fn in VARIANTS.items():
            for use_labels in (False, True):
                xi, yi = x[sl].clone().requires_grad_(), y[sl].clone().requires_grad_()
                s = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
                args = [s]
                if "siglip" in name:
                    args.append(torch.tensor(-2.0, dtype=torch.float64, requires_grad=True))
                kw = {"labels": labels[sl]} if use_labels else {}
                loss = fn(xi, yi, *args, tile=4, **kw)
                loss.backward()
                results[(name, use_labels)] = (
                    loss.detach(), xi.grad, yi.grad, [a.grad for a in args]
                )
        torch.save(results, f"{out_dir}/rank{rank}.pt")
        clean = True
    finally:
        shutdown(sync=clean)


def _masked_reference(x, y, s, bias, labels, siglip_loss: bool) -> torch.Tensor:
    """Dense float64 reference with same-label off-diagonal pairs excluded."""
    logits = s * x @ y.T
    n = x.shape[0]
    m = (labels[:, None] == labels[None, :]) & ~torch.eye(n, dtype=torch.bool)
    if siglip_loss:
        logits = logits + bias
        sign = 2 * torch.eye(n, dtype=logits.dtype) - 1
        return -(torch.nn.functional.logsigmoid(sign * logits) * ~m).sum() / n
    logits = logits.masked_fill(m, float("-inf"))
    tgt = torch.arange(n)
    return 0.5 * (torch.nn.functional.cross_entropy(logits, tgt)
                  + torch.nn.functional.cross_entropy(logits.T, tgt))


@pytest.mark.distributed
@pytest.mark.parametrize("world", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_global_batch_losses_match_single_process(tmp_path, world):
    """2 ranks by default; 3 (a ring whose neighbours differ) with -m slow."""
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    assert [r["world_info"] for r in res] == [(r, world) for r in range(world)]
    assert all(r["is_dist"] for r in res)
    x, y, labels = _data(world)

    # all-gather with gradient: rank r's rows get the sum over ranks of the upstream weights
    w_sum = sum(torch.arange(world * B * D, dtype=torch.float64).view(world * B, D) * (k + 1)
                for k in range(world))
    for r in range(world):
        torch.testing.assert_close(res[r]["gather_grad"], w_sum[r * B : (r + 1) * B])

    for name in VARIANTS:
        is_sig = "siglip" in name
        for use_labels in (False, True):
            xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
            s = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
            bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
            if use_labels:
                ref = _masked_reference(xg, yg, s, bias, labels, is_sig)
            else:
                ref = siglip(xg, yg, s, bias) if is_sig else info_nce(xg, yg, s)
            params = [s, bias] if is_sig else [s]
            ref_grads = torch.autograd.grad(ref, [xg, yg, *params])
            losses = torch.stack([res[r][(name, use_labels)][0] for r in range(world)])
            torch.testing.assert_close(losses.mean(), ref.detach(), rtol=1e-10, atol=0)
            for r in range(world):
                _, gx, gy, _ = res[r][(name, use_labels)]
                sl = slice(r * B, (r + 1) * B)
                torch.testing.assert_close(gx, world * ref_grads[0][sl], rtol=1e-10, atol=1e-13)
                torch.testing.assert_close(gy, world * ref_grads[1][sl], rtol=1e-10, atol=1e-13)
            for i, g_ref in enumerate(ref_grads[2:]):
                shares = sum(res[r][(name, use_labels)][3][i] for r in range(world))
                torch.testing.assert_close(shares, world * g_ref, rtol=1e-10, atol=1e-13)


def test_single_process_fallbacks_equal_plain_losses():
    """Without a process group every variant is the plain (tiled) loss."""
    assert not is_dist() and world_info() == (0, 1)
    x, y, _ = _data(2)
    s, bias = torch.tensor(5.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    ref = info_nce(x, y, s)
    torch.testing.assert_close(gather_info_nce(x, y, s, tile=5), ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(ring_info_nce(x, y, s, tile=5), ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(gather_siglip(x, y, s, bias, tile=5), siglip(x, y, s, bias),
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(ring_siglip(x, y, s, bias, tile=5), siglip(x, y, s, bias),
                               rtol=1e-12, atol=0)
    assert all_gather_with_grad(x) is x
