"""``global_batch: replicate``: one all-gather, then the single-process loss on every rank.

Two gloo processes against the plain float64 losses on the whole batch, with the conventions of
align/distributed.py (mean over ranks of the local losses = global loss; each rank's embedding
gradients = W x the global gradients of its own rows; logit_scale / logit_bias shares sum to
W x the global gradient) — through the registered objectives, so ``auto`` is checked to pick
replicate at a small batch. The collectives are counted: two all-gathers (sizes, data) in forward,
none in backward.
"""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import pytest

from modalab.align.losses import info_nce, siglip
from modalab.align.objectives_clip import TiledContrastive
from modalab.align.replicated import REPLICATE_MAX_MACS, replicate_rows, should_replicate
from modalab.train.dist import shutdown

B, D = 6, 5
CASES = [  # (kind, global_batch, mask_same_label, same_label)
    ("info_nce", "replicate", False, "ignore"), ("info_nce", "auto", True, "ignore"),
    ("siglip", "replicate", True, "ignore"), ("siglip", "auto", True, "positive"),
]


def _data(world: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x, y = (torch.nn.functional.normalize(
        torch.randn(world * B, D, generator=g, dtype=torch.float64), dim=1) for _ in range(2))
    return x, y, torch.randint(0, 3, (world * B,), generator=g)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    calls = {"n": 0}
    plain = dist.all_gather

    def counted(*a, **k):
        calls["n"] += 1
        return plain(*a, **k)

    dist.all_gather = counted
    clean = False
    try:
        x, y, labels = _data(world)
        sl = slice(rank * B, (rank + 1) * B)
        res = {}
        for kind, mode, mask, same in CASES:
            loss_fn = TiledContrastive(kind, mask_same_label=mask, global_batch=mode, same_label=same)
            xi, yi = x[sl].clone().requires_grad_(), y[sl].clone().requires_grad_()
            s = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
            bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
            calls["n"] = 0
            loss = loss_fn(xi, yi, s, bias if kind == "siglip" else None, labels=labels[sl])
            fwd = calls["n"]
            loss.backward()
            res[(kind, mode, mask, same)] = (loss.detach(), xi.grad, yi.grad, s.grad, bias.grad,
                                             fwd, calls["n"] - fwd)
        # bfloat16 embeddings: the labels' int64 bits ride as 4 bf16 columns and come back intact
        big = torch.tensor([rank * 2**40 + 7, -3 - rank], dtype=torch.int64)
        e = torch.randn(2, 3).to(torch.bfloat16)
        _, _, got = replicate_rows(e, e, big)
        res["bf16_labels"] = got
        torch.save(res, f"{out_dir}/rank{rank}.pt")
        clean = True
    finally:
        dist.all_gather = plain
        shutdown(sync=clean)


def _reference(kind: str, mask: bool, same: str, x, y, s, bias, labels) -> torch.Tensor:
    m = labels[:, None] == labels[None, :]
    if kind == "info_nce":
        return info_nce(x, y, s, mask=m if mask else None)
    if same == "positive":
        return siglip(x, y, s, bias, positive=m)
    return siglip(x, y, s, bias, mask=m if mask else None)


@pytest.mark.distributed
def test_replicate_matches_single_process_with_one_gather_and_no_backward_traffic(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    x, y, labels = _data(world)
    for case in CASES:
        kind, _, mask, same = case
        xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
        s = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
        bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
        ref = _reference(kind, mask, same, xg, yg, s, bias, labels)
        params = [s, bias] if kind == "siglip" else [s]
        gx, gy, *gp = torch.autograd.grad(ref, [xg, yg, *params])
        losses = torch.stack([res[r][case][0] for r in range(world)])
        torch.testing.assert_close(losses.mean(), ref.detach(), rtol=1e-12, atol=0)
        for r in range(world):
            loss, rx, ry, rs, rb, fwd, bwd = res[r][case]
            sl = slice(r * B, (r + 1) * B)
            torch.testing.assert_close(rx, world * gx[sl], rtol=1e-10, atol=1e-13)
            torch.testing.assert_close(ry, world * gy[sl], rtol=1e-10, atol=1e-13)
            assert (fwd, bwd) == (2, 0), (case, fwd, bwd)  # sizes + data; nothing in backward
        for i, ref_g in enumerate(gp):
            shares = sum(res[r][case][3 + i] for r in range(world))
            torch.testing.assert_close(shares, world * ref_g, rtol=1e-10, atol=1e-13)
    want = torch.tensor([7, -3, 2**40 + 7, -4])
    for r in range(world):
        assert torch.equal(res[r]["bf16_labels"], want)


def test_without_a_process_group_replicate_is_the_identity_and_auto_follows_the_size():
    x, y, labels = _data(1)
    assert replicate_rows(x, y, labels) == (x, y, labels)
    loss = TiledContrastive("info_nce", global_batch="replicate")(x, y, torch.tensor(7.0, dtype=torch.float64))
    torch.testing.assert_close(loss, info_nce(x, y, torch.tensor(7.0, dtype=torch.float64)), rtol=0, atol=0)
    assert should_replicate(128, 64) and should_replicate(256, 64)  # 2^22: the digits recipe and twice it
    assert not should_replicate(257, 64) and not should_replicate(32768, 512)
    assert REPLICATE_MAX_MACS == 256 * 256 * 64
