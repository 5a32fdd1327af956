"""Global-batch contrastive losses for small global batches: one all-gather, then the whole
single-process loss on every rank.

``gather`` (``align/distributed.py``) splits the (N x N) work of the global loss over the W ranks
and pays for it with five collectives per step (batch sizes, labels, texts and the partial column
log-sum-exps in forward, the texts' gradient in backward), each a point where every rank waits for
the slowest one. When N x N x D is small (the digits recipe: N = 128, D = 64, a million
multiply-adds) the work saved is worth less than the waiting. ``replicate_rows`` gathers images,
texts and labels in one all-gather (after the batch-size check) and the caller runs the
single-process loss on the whole batch; backward needs no communication at all.

Conventions (those of ``align/distributed.py``, so DDP and the tests treat both alike): every rank
returns the global loss (so the mean over ranks is the global loss); each rank's embedding
gradients are W x the gradients of the global loss with respect to its own rows (the gradients of
``sum_r loss_r``), which DDP's averaging turns into the global gradients; ``logit_scale`` /
``logit_bias`` get the global gradient on every rank (their sum over ranks is W x the global one).
Every rank must call backward with the same incoming gradient, as DDP training does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from modalab._dist_info import is_dist, world_info

REPLICATE_MAX_MACS = 2**22  # global_batch=auto: replicate while N * N * D is at most this


def _gather(x: Tensor, group: dist.ProcessGroup | None) -> Tensor:
    out = [torch.empty_like(x) for _ in range(world_info(group)[1])]
    dist.all_gather(out, x.contiguous(), group=group)
    return torch.cat(out)


class _GatherRows(torch.autograd.Function):
    """(B, F) on each rank -> (W * B, F) in rank order. Backward: W x the gradient of this rank's
    own rows — every rank computed the same function of the same gathered rows, so the gradients
    need no reduction."""

    @staticmethod
    def forward(ctx, x, group):  # type: ignore[override]
        ctx.rank, ctx.world = world_info(group)
        ctx.n = x.shape[0]
        return _gather(x, group)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n] * ctx.world, None


def replicate_rows(
    image_emb: Tensor, text_emb: Tensor, labels: Tensor | None = None,
    group: dist.ProcessGroup | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """(B, D) embeddings and (B,) labels of each rank -> the (N, D) / (N,) global batch, N = W * B.

    Images, texts and labels travel in one all-gather: the labels' int64 bits ride as extra columns
    of the embeddings' dtype (copied, never computed on). Without a process group the inputs come
    back unchanged.
    """
    if not is_dist():
        return image_emb, text_emb, labels
    n, d = image_emb.shape
    if text_emb.shape != image_emb.shape or text_emb.dtype != image_emb.dtype:
        raise ValueError(
            f"replicate_rows expects image and text embeddings of one shape and dtype, got "
            f"{tuple(image_emb.shape)} {image_emb.dtype} and {tuple(text_emb.shape)} {text_emb.dtype}"
        )
    sizes = _gather(torch.tensor([n], device=image_emb.device), group)
    if (sizes != n).any():
        raise ValueError(
            f"replicate_rows needs the same local batch on every rank, got {sizes.tolist()}; "
            "drop the last incomplete batch (drop_last=True)"
        )
    parts = [image_emb, text_emb]
    if labels is not None:  # (B,) int64 -> (B, 8 / itemsize) columns of the embeddings' dtype
        bits = labels.to(torch.int64).contiguous().view(image_emb.dtype).reshape(n, -1)
        parts.append(bits)
    packed = _GatherRows.apply(torch.cat(parts, 1), group)  # (N, 2D [+ label columns])
    image_all, text_all = packed[:, :d], packed[:, d : 2 * d]
    if labels is None:
        return image_all, text_all, None
    label_all = packed[:, 2 * d :].detach().contiguous().view(torch.int64).reshape(-1)  # (N,)
    return image_all, text_all, label_all.to(labels.dtype)


def should_replicate(n_global: int, dim: int) -> bool:
    """``global_batch: auto``: replicate when the whole loss is at most ``REPLICATE_MAX_MACS``
    multiply-adds per logits pass (N = 128, D = 64: 2^20), where the collectives ``gather`` adds
    cost more than the (N x N) work it splits."""
    return n_global * n_global * dim <= REPLICATE_MAX_MACS
