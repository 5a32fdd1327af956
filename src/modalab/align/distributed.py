"""Global-batch contrastive losses across processes, with exact gradients.

Every rank holds B local pairs; the global batch has N = W * B. Two ways to score local rows
against all N columns:

- **gather** (``gather_info_nce`` / ``gather_siglip``): all-gather the text embeddings with a
  gradient-carrying all-gather (backward: all-reduce of the gathered gradient, then the owner's
  slice), then run the tiled loss of the local rows against the global columns. For InfoNCE the
  partial column log-sum-exps are all-gathered too, so each rank does only its (B x N) share of the
  work (N^2 in total, as on one process).
- **ring** (``ring_info_nce`` / ``ring_siglip``): text blocks travel around the ring (send to
  rank + 1, receive from rank - 1) with their running column LSE; no rank ever holds more than two
  text blocks. Backward is a second ring pass that carries each block's gradient home.

Conventions (as open_clip's ``--local-loss --gather-with-grad``): each rank returns its local loss
``loss_r``; the mean over ranks of ``loss_r`` is the loss of the global batch; each rank's
embedding gradients are those of ``sum_r loss_r``, so after DDP averages parameter gradients they
equal the gradients of the global loss. ``logit_scale`` / ``logit_bias`` get per-rank shares whose
sum over ranks is exact. Every rank must call backward with the same incoming gradient (1, or the
same loss scale), which is what DDP training does. Works with gloo (CPU) and NCCL (GPU).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from modalab._dist_info import is_dist, world_info
from modalab.align.tile_plan import PairMask, make_mask
from modalab.constants import acc_dtype
from modalab.align.tiled import (
    TiledInfoNCEFn, TiledSigLIPFn, _as_tensor, _check, _tile, grad_pass, lse_pass, siglip_pass,
    siglip_saved_backward,
)

_NEG_INF = float("-inf")


def _gather(x: Tensor, group: dist.ProcessGroup | None) -> Tensor:
    """Plain all-gather along dim 0 (equal sizes on every rank); no gradient."""
    out = [torch.empty_like(x) for _ in range(world_info(group)[1])]
    dist.all_gather(out, x.contiguous(), group=group)
    return torch.cat(out)


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):  # type: ignore[override]
        ctx.group, ctx.n = group, x.shape[0]
        return _gather(x, group)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        g = g.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)  # every rank's use of block k
        rank = world_info(ctx.group)[0]
        return g[rank * ctx.n : (rank + 1) * ctx.n], None


def all_gather_with_grad(x: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """(B, ...) on each rank -> (W * B, ...) in rank order; gradients flow back to the owner."""
    if not is_dist():
        return x
    sizes = _gather(torch.tensor([x.shape[0]], device=x.device), group)
    if (sizes != x.shape[0]).any():
        raise ValueError(
            f"all_gather_with_grad needs the same local batch on every rank, got {sizes.tolist()}; "
            "drop the last incomplete batch (drop_last=True)"
        )
    return _AllGather.apply(x, group)


def _global_mask(
    mask: Tensor | None, labels: Tensor | None, n: int, fn: str, group: dist.ProcessGroup | None
) -> PairMask | None:
    """labels (B,) local -> gathered (N,); mask must already be the global (N, N) one."""
    if labels is not None and is_dist():
        labels = _gather(labels, group)
    return make_mask(mask, labels, n, fn)


def _col_reduce(group: dist.ProcessGroup | None):
    def reduce(part: Tensor) -> Tensor:  # (N,) partial column LSE on each rank -> full (N,)
        return torch.logsumexp(_gather(part[None], group), 0)

    return reduce


def gather_info_nce(
    image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float, *,
    mask: Tensor | None = None, labels: Tensor | None = None,
    group: dist.ProcessGroup | None = None, tile: int | tuple[int, int] | None = None,
) -> Tensor:
    """Local share of the global-batch InfoNCE (see module docstring for the conventions).

    Args:
        image_emb, text_emb: (B, D) local embeddings (same B on every rank).
        labels: optional (B,) local labels; equal labels across the global batch are excluded.
        mask: optional global (N, N) bool mask (the same on every rank).
    """
    _check("gather_info_nce", image_emb, text_emb)
    rank, world = world_info(group)
    n = image_emb.shape[0]
    pm = _global_mask(mask, labels, world * n, "gather_info_nce", group)
    y_all = all_gather_with_grad(text_emb, group)  # (N, D)
    scale = _as_tensor(logit_scale, image_emb)
    reduce = _col_reduce(group) if world > 1 else None
    return TiledInfoNCEFn.apply(image_emb, y_all, scale, pm, _tile(tile), rank * n, reduce)


def gather_siglip(
    image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float,
    logit_bias: Tensor | float, *, mask: Tensor | None = None, labels: Tensor | None = None,
    group: dist.ProcessGroup | None = None, tile: int | tuple[int, int] | None = None,
) -> Tensor:
    """Local share of the global-batch SigLIP: local rows x all texts, normalised by local B."""
    _check("gather_siglip", image_emb, text_emb)
    rank, world = world_info(group)
    n = image_emb.shape[0]
    pm = _global_mask(mask, labels, world * n, "gather_siglip", group)
    y_all = all_gather_with_grad(text_emb, group)
    scale, bias = _as_tensor(logit_scale, image_emb), _as_tensor(logit_bias, image_emb)
    return TiledSigLIPFn.apply(image_emb, y_all, scale, bias, pm, _tile(tile), rank * n)


# ------------------------------------------------------------------------------------- ring


class _Ring:
    """Send to rank + 1, receive from rank - 1 (global ranks of ``group``)."""

    def __init__(self, group: dist.ProcessGroup | None) -> None:
        self.rank, self.world = world_info(group)
        glob = (lambda r: r) if group is None else (lambda r: dist.get_global_rank(group, r))
        self.next = glob((self.rank + 1) % self.world)
        self.prev = glob((self.rank - 1) % self.world)
        self.group = group

    def start(self, tensors: list[Tensor]) -> tuple[list, list[Tensor]]:
        recv = [torch.empty_like(t) for t in tensors]
        ops = [dist.P2POp(dist.isend, t.contiguous(), self.next, self.group) for t in tensors]
        ops += [dist.P2POp(dist.irecv, r, self.prev, self.group) for r in recv]
        return dist.batch_isend_irecv(ops), recv

    def shift(self, tensors: list[Tensor]) -> list[Tensor]:
        reqs, recv = self.start(tensors)
        for r in reqs:
            r.wait()
        return recv


def _wait(reqs: list) -> None:
    for r in reqs:
        r.wait()


class _RingInfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, scale, mask, tile, group):  # type: ignore[override]
        ring, acc, n = _Ring(group), acc_dtype(x, y), x.shape[0]
        s = scale.detach().to(acc)
        a = torch.full((n,), _NEG_INF, dtype=acc, device=x.device)
        blk, b = y, torch.full_like(a, _NEG_INF)
        for step in range(ring.world):
            k = (ring.rank - step) % ring.world  # owner of the block in hand
            reqs, nxt = ring.start([blk]) if step < ring.world - 1 else ([], [None])
            lse_pass(x, blk, s, a, b, row_offset=ring.rank * n, col_offset=k * n,
                     mask=mask, tile=tile)
            b = ring.shift([b])[0] if ring.world > 1 else b  # running column LSE follows its block
            _wait(reqs)
            blk = nxt[0]
        diag = (x.to(acc) * y.to(acc)).sum(1)  # (B,)
        ctx.save_for_backward(x, y, scale, a, b, diag)
        ctx.mask, ctx.tile, ctx.group = mask, tile, group
        return 0.5 * ((a - s * diag).sum() + (b - s * diag).sum()) / n

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, y, scale, a, b, diag = ctx.saved_tensors
        ring, acc, n = _Ring(ctx.group), a.dtype, x.shape[0]
        s = scale.detach().to(acc)
        xa = x.to(acc)
        gx = torch.zeros_like(xa)
        blk, bk, gy = y, b, torch.zeros_like(xa)
        for step in range(ring.world):
            k = (ring.rank - step) % ring.world
            last = step == ring.world - 1
            reqs, nxt = ring.start([blk, bk]) if not last else ([], [None, None])
            grad_pass(x, blk, s, a, bk, gx, gy, row_offset=ring.rank * n, col_offset=k * n,
                      mask=ctx.mask, tile=ctx.tile)
            gy = ring.shift([gy])[0] if ring.world > 1 else gy  # gradient follows its block home
            _wait(reqs)
            blk, bk = nxt
        g = g.to(acc)
        c = 0.5 * g / n
        ya = y.to(acc)
        ds = c * (xa * gx).sum() - g * diag.sum() / n
        dx = gx.mul_(c * s).addcmul_(ya, -g * s / n)  # in place, as in tiled.py
        dy = gy.mul_(c * s).addcmul_(xa, -g * s / n)
        return (dx.to(x.dtype), dy.to(y.dtype), ds.to(scale.dtype).reshape(scale.shape),
                None, None, None)


class _RingSigLIP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, scale, bias, mask, tile, group):  # type: ignore[override]
        ring, acc, n = _Ring(group), acc_dtype(x, y), x.shape[0]
        s, bb = scale.detach().to(acc), bias.detach().to(acc)
        want = any(ctx.needs_input_grad[:4])
        xa, ya = x.to(acc), y.to(acc)
        gx = torch.zeros_like(xa) if want else None
        gy = torch.zeros_like(ya) if want else None
        loss = torch.zeros((), dtype=acc, device=x.device)
        gsum = torch.zeros_like(loss)
        blk = y
        for step in range(ring.world):
            k = (ring.rank - step) % ring.world
            reqs, nxt = ring.start([blk]) if step < ring.world - 1 else ([], [None])
            lk, gk = siglip_pass(x, blk, s, bb, row_offset=ring.rank * n, col_offset=k * n,
                                 mask=mask, tile=tile, gx=gx, gy=gy)
            loss, gsum = loss + lk, gsum + gk
            if want and ring.world > 1:
                gy = ring.shift([gy])[0]
            _wait(reqs)
            blk = nxt[0]
        diag = (xa * ya).sum(1)  # (B,)
        zd = s * diag + bb
        loss = (loss + torch.nn.functional.softplus(-zd).sum()) / n
        if want:
            gd = -torch.sigmoid(-zd)  # (B,)
            ds = (xa * gx).sum() + (gd * diag).sum()
            gx.mul_(s / n).addcmul_(ya, (s * gd / n)[:, None])
            gy.mul_(s / n).addcmul_(xa, (s * gd / n)[:, None])
            ctx.save_for_backward(gx, gy, ds / n, (gsum + gd.sum()) / n)
        ctx.meta = (x.dtype, y.dtype, scale, bias)
        return loss

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return siglip_saved_backward(ctx, g)


def ring_info_nce(
    image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float, *,
    mask: Tensor | None = None, labels: Tensor | None = None,
    group: dist.ProcessGroup | None = None, tile: int | tuple[int, int] | None = None,
) -> Tensor:
    """Like :func:`gather_info_nce`, but text blocks travel around the ring (two held at a time)."""
    _check("ring_info_nce", image_emb, text_emb)
    world = world_info(group)[1]
    pm = _global_mask(mask, labels, world * image_emb.shape[0], "ring_info_nce", group)
    scale = _as_tensor(logit_scale, image_emb)
    return _RingInfoNCE.apply(image_emb, text_emb, scale, pm, _tile(tile), group)


def ring_siglip(
    image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float,
    logit_bias: Tensor | float, *, mask: Tensor | None = None, labels: Tensor | None = None,
    group: dist.ProcessGroup | None = None, tile: int | tuple[int, int] | None = None,
) -> Tensor:
    """Like :func:`gather_siglip`, but text blocks (and their gradients) travel around the ring."""
    _check("ring_siglip", image_emb, text_emb)
    world = world_info(group)[1]
    pm = _global_mask(mask, labels, world * image_emb.shape[0], "ring_siglip", group)
    scale, bias = _as_tensor(logit_scale, image_emb), _as_tensor(logit_bias, image_emb)
    return _RingSigLIP.apply(image_emb, text_emb, scale, bias, pm, _tile(tile), group)
