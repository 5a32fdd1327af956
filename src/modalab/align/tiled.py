"""Exact contrastive losses that never build the B x B logits: tiled InfoNCE and SigLIP.

``tiled_info_nce`` and ``tiled_siglip`` return the same value and gradients as
:func:`modalab.align.losses.info_nce` / :func:`~modalab.align.losses.siglip` (and the gradients of
``logit_scale`` / ``logit_bias``) while holding at most two (tile x tile) logit blocks. The math is
in ``docs/align_tiled.md``; in short:

- InfoNCE, forward: each (rows x cols) block ``S = s * X Y^T`` is exponentiated once against its
  row maxima; row sums merge into the running row log-sum-exp (LSE) and a matrix-vector product
  gives the column sums, merged into the column LSE (``logaddexp``). Only the inputs and the two
  LSE vectors are saved. Backward recomputes each block and forms
  ``G = exp(S - a_i) + exp(S - b_j)`` (the two softmaxes) in place from one exponential
  (``_two_softmaxes``), then ``dX += G Y`` and ``dY += G^T X``.
- SigLIP has no normaliser, so its gradient ``sigmoid(z)`` is known block by block: the forward
  computes loss and gradients in the same sweep (6 B^2 D flops instead of 8) and backward only
  scales them by the incoming gradient.

False negatives: ``mask`` (B, B) bool, True = off-diagonal pair excluded from the negatives, or
``labels`` (B,) meaning "same label = excluded" (no B x B mask needed). The diagonal (the positive
pair) is never excluded, so every row stays finite. The passes below work in global coordinates
(``row_offset`` / ``col_offset``) so ``align/distributed.py`` reuses them for its blocks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from modalab.align.tile_plan import PairMask, auto_tile, lowp_matmul, make_mask
from modalab.constants import acc_dtype

__all__ = [
    "tiled_info_nce", "tiled_siglip", "TiledInfoNCEFn", "TiledSigLIPFn",
    "lse_pass", "grad_pass", "siglip_pass",
]

_NEG_INF = float("-inf")


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, n)) for i in range(0, n, size)]


class _LowpScratch:
    """Preallocated ``lp`` (bfloat16) buffers of the low-precision GEMM path, so that no block
    allocates (a fresh 4096 x 4096 bf16 product is 32 MiB: an mmap and page faults per block).

    oneDNN accumulates a bf16 GEMM in float32 and rounds the output to bf16 once; the logits are
    then widened into the float32 block where the exponentials and every sum run in float32.
    """

    def __init__(self, n: int, lp: torch.dtype, device: torch.device) -> None:
        self.blk = torch.empty(n, dtype=lp, device=device)
        self.lp = lp

    def view(self, r: int, c: int) -> Tensor:
        return self.blk[: r * c].view(r, c)


def _lp_rows(x: Tensor, scale: Tensor | None, acc: torch.dtype, lp: torch.dtype | None) -> Tensor | None:
    """``x * scale`` converted to ``lp`` once (None on the float32 path)."""
    if lp is None:
        return None
    return (x.to(acc) * scale).to(lp) if scale is not None else x.to(lp)


def _logits(out: Tensor, xs: Tensor, y_blk: Tensor, lp: _LowpScratch | None) -> Tensor:
    """``out = xs @ y_blk.T``: in ``out``'s dtype, or (``lp``: ``xs``, ``y_blk`` already bf16) a
    bf16 GEMM into the scratch block, widened into ``out``."""
    if lp is not None:
        return out.copy_(torch.mm(xs, y_blk.T, out=lp.view(*out.shape)))
    return torch.mm(xs, y_blk.to(out.dtype).T, out=out)


def _accumulate(gx: Tensor, gy: Tensor, g: Tensor, xb: Tensor, yb: Tensor,
                lp: _LowpScratch | None) -> None:
    """``gx += g @ yb``, ``gy += g.T @ xb`` (fp32/fp64 ``addmm_``, or bf16 GEMMs on bf16 ``xb``,
    ``yb`` whose (rows x D) outputs are added into the float32 accumulators)."""
    if lp is None:
        gx.addmm_(g, yb)
        gy.addmm_(g.T, xb)
        return
    g16 = lp.view(*g.shape).copy_(g)
    gx.add_(torch.mm(g16, yb))
    gy.add_(torch.mm(g16.T, xb))


def lse_pass(
    x: Tensor, y: Tensor, scale: Tensor, row_lse: Tensor | None, col_lse: Tensor | None, *,
    row_offset: int = 0, col_offset: int = 0, mask: PairMask | None = None,
    tile: tuple[int, int] | None = None,
) -> None:
    """Merge the log-sum-exp of ``S = scale * x @ y.T`` into ``row_lse`` / ``col_lse`` in place.

    Args:
        x: (R, D) rows; y: (C, D) columns; scale: 0-dim tensor in the accumulation dtype.
        row_lse: (R,) running row LSE (start at -inf) or None; col_lse: (C,) likewise.
        row_offset, col_offset: global index of x[0] / y[0]; pairs with equal global index are the
            positives (never masked).
    """
    acc = (row_lse if row_lse is not None else col_lse).dtype
    lpt = lowp_matmul(x.dtype, x.device)
    tr, tc = tile or auto_tile(x.shape[0], y.shape[0], x.shape[1], acc)
    n = min(tr, x.shape[0]) * min(tc, y.shape[0])
    buf = torch.empty(n, dtype=acc, device=x.device)
    lp = _LowpScratch(n, lpt, x.device) if lpt is not None else None
    y_lp = _lp_rows(y, None, acc, lpt)  # converted once, not once per block
    log_thr = 0.5 * math.log(torch.finfo(acc).tiny)  # column sums below exp(this) are redone
    for r0, r1 in _blocks(x.shape[0], tr):
        xs = x[r0:r1].to(acc) * scale  # (r, D)
        xs_lp = _lp_rows(x[r0:r1], scale, acc, lpt)
        for c0, c1 in _blocks(y.shape[0], tc):
            s_blk = _logits(buf[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0),
                            xs if lp is None else xs_lp, y[c0:c1] if lp is None else y_lp[c0:c1], lp)
            m = mask.block(row_offset + r0, row_offset + r1, col_offset + c0, col_offset + c1) \
                if mask is not None else None
            if m is not None:
                s_blk.masked_fill_(m, _NEG_INF)
            mr = s_blk.amax(1).clamp_(min=torch.finfo(acc).min)  # (r,) finite even if all masked
            s_blk.sub_(mr[:, None]).exp_()  # E = exp(S - m_i), in place
            if row_lse is not None:
                part = mr + s_blk.sum(1).log()
                torch.logaddexp(row_lse[r0:r1], part, out=row_lse[r0:r1])
            if col_lse is None:
                continue
            top = mr.max()
            cs = torch.mv(s_blk.T, (mr - top).exp())  # (c,) sum_i exp(S_ij - top)
            part = top + cs.log()
            low = (cs < math.exp(log_thr)).nonzero().flatten()
            if low.numel():  # columns far below the block maximum: redo them exactly
                sub = xs @ y[c0 + low].to(acc).T  # (r, k)
                if m is not None:
                    sub.masked_fill_(m[:, low], _NEG_INF)
                part[low] = torch.logsumexp(sub, 0)
            torch.logaddexp(col_lse[c0:c1], part, out=col_lse[c0:c1])


def grad_pass(
    x: Tensor, y: Tensor, scale: Tensor, row_lse: Tensor | None, col_lse: Tensor | None,
    gx: Tensor, gy: Tensor, *, row_offset: int = 0, col_offset: int = 0,
    mask: PairMask | None = None, tile: tuple[int, int] | None = None,
) -> None:
    """Accumulate ``gx += G @ y`` and ``gy += G.T @ x`` with ``G = exp(S - a_i) + exp(S - b_j)``.

    ``S = scale * x @ y.T`` is recomputed block by block; a missing LSE drops its term. The caller
    multiplies by ``scale`` and the loss coefficient: dL/dx = c * scale * gx, and
    dL/dscale = c * sum(x * gx).

    Args:
        x: (R, D); y: (C, D); row_lse: (R,) or None; col_lse: (C,) or None;
        gx: (R, D), gy: (C, D) accumulators in the accumulation dtype.
    """
    acc = gx.dtype
    lpt = lowp_matmul(x.dtype, x.device)
    tr, tc = tile or auto_tile(x.shape[0], y.shape[0], x.shape[1], acc)
    n = min(tr, x.shape[0]) * min(tc, y.shape[0])
    buf = torch.empty(n, dtype=acc, device=x.device)
    buf2 = torch.empty(n, dtype=acc, device=x.device) if row_lse is not None else None
    lp = _LowpScratch(n, lpt, x.device) if lpt is not None else None
    y_lp = _lp_rows(y, None, acc, lpt)
    for r0, r1 in _blocks(x.shape[0], tr):
        xa = x[r0:r1].to(lpt) if lp else x[r0:r1].to(acc)
        xs = x[r0:r1].to(acc) * scale if lp is None else _lp_rows(x[r0:r1], scale, acc, lpt)  # (r, D)
        for c0, c1 in _blocks(y.shape[0], tc):
            ya = y_lp[c0:c1] if lp else y[c0:c1].to(acc)
            s_blk = _logits(buf[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0), xs, ya, lp)
            m = mask.block(row_offset + r0, row_offset + r1, col_offset + c0, col_offset + c1) \
                if mask is not None else None
            if m is not None:
                s_blk.masked_fill_(m, _NEG_INF)
            if row_lse is not None and col_lse is not None:
                g_blk = _two_softmaxes(s_blk, row_lse[r0:r1], col_lse[c0:c1], buf2)
            elif row_lse is not None:  # row softmax P = exp(S - a_i) only
                g_blk = s_blk.sub_(row_lse[r0:r1, None]).exp_()
            else:  # column softmax Q = exp(S - b_j) only
                g_blk = s_blk.sub_(col_lse[None, c0:c1]).exp_()
            _accumulate(gx[r0:r1], gy[c0:c1], g_blk, xa, ya, lp)


def _two_softmaxes(s_blk: Tensor, a: Tensor, b: Tensor, buf: Tensor) -> Tensor:
    """``G = exp(S - a_i) + exp(S - b_j)`` in place of ``s_blk`` (r, c); ``buf`` is scratch.

    With ``E = exp(S - a_i)`` (the row softmax), ``exp(S - b_j) = E * exp(a_i - b_j)`` and
    ``exp(a_i - b_j) = u_i v_j`` (``u = exp(a - max a) <= 1``, ``v = exp(max a - b) <= e^L``), so
    ``G = E + E * (u v^T)``: one exponential per entry instead of two. Exact as long as
    ``max a - min b <= L`` with ``L`` = 0.45 x the dtype's log-underflow range: a column-softmax
    entry it could miss is below ``e^-(0.55 log(1/tiny))`` (~1e-21 in float32). Otherwise both
    exponentials are computed directly.
    """
    limit = 0.45 * -math.log(torch.finfo(s_blk.dtype).tiny)
    top = a.max()
    if float(top - b.min()) <= limit:
        w = torch.outer((a - top).exp(), (top - b).exp(), out=buf[: s_blk.numel()].view_as(s_blk))
        e = s_blk.sub_(a[:, None]).exp_()  # E = exp(S - a_i)
        return e.addcmul_(e, w)
    p = torch.sub(s_blk, a[:, None], out=buf[: s_blk.numel()].view_as(s_blk)).exp_()
    return s_blk.sub_(b[None, :]).exp_().add_(p)


def siglip_pass(
    x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, *, row_offset: int = 0,
    col_offset: int = 0, mask: PairMask | None = None, tile: tuple[int, int] | None = None,
    gx: Tensor | None = None, gy: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Sum of ``softplus(z_ij)`` over the negative pairs, ``z = scale * x @ y.T + bias``.

    Positive pairs (equal global index) and masked pairs are skipped; the caller adds the
    positives' ``softplus(-z_ii)``. With ``gx`` / ``gy`` given, also accumulates
    ``gx += G @ y``, ``gy += G.T @ x`` with ``G = sigmoid(z)`` on the negatives.

    Returns:
        (loss_sum, g_sum): 0-dim tensors; g_sum = sum(G) (the bias gradient, unscaled).
    """
    acc = scale.dtype
    lpt = lowp_matmul(x.dtype, x.device)
    tr, tc = tile or auto_tile(x.shape[0], y.shape[0], x.shape[1], acc)
    n = min(tr, x.shape[0]) * min(tc, y.shape[0])
    buf, buf2 = (torch.empty(n, dtype=acc, device=x.device) for _ in range(2))
    lp = _LowpScratch(n, lpt, x.device) if lpt is not None else None
    y_lp = _lp_rows(y, None, acc, lpt)
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    gsum = torch.zeros((), dtype=torch.float64, device=x.device)
    zero = torch.zeros((), dtype=acc, device=x.device)
    for r0, r1 in _blocks(x.shape[0], tr):
        xa = x[r0:r1].to(lpt) if lp else x[r0:r1].to(acc)
        xs = x[r0:r1].to(acc) * scale if lp is None else _lp_rows(x[r0:r1], scale, acc, lpt)  # (r, D)
        for c0, c1 in _blocks(y.shape[0], tc):
            ya = y_lp[c0:c1] if lp else y[c0:c1].to(acc)
            z = _logits(buf[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0), xs, ya, lp)
            z.add_(bias)
            gr0, gc0 = row_offset + r0, col_offset + c0
            if mask is not None and (m := mask.block(gr0, row_offset + r1, gc0, col_offset + c1)) \
                    is not None:
                z.masked_fill_(m, _NEG_INF)
            z.diagonal(gr0 - gc0).fill_(_NEG_INF)  # positives: handled by the caller
            sp = torch.logaddexp(z, zero, out=buf2[: z.numel()].view_as(z))  # softplus(z)
            loss += sp.sum()  # float32 block sum (pairwise), float64 across blocks
            if gx is None:
                continue
            g_blk = z.sigmoid_()
            gsum += g_blk.sum()
            _accumulate(gx[r0:r1], gy[c0:c1], g_blk, xa, ya, lp)
    return loss.to(acc), gsum.to(acc)


# --------------------------------------------------------------------------- autograd functions


def _as_tensor(v: Tensor | float, like: Tensor) -> Tensor:
    if isinstance(v, Tensor):
        return v
    return torch.tensor(float(v), dtype=torch.float64, device=like.device)


def _check(name: str, image_emb: Tensor, text_emb: Tensor) -> None:
    if image_emb.shape != text_emb.shape or image_emb.dim() != 2:
        raise ValueError(
            f"{name} expects two (B, D) tensors of the same shape, got "
            f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )


def _tile(tile: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if tile is None:
        return None
    tr, tc = (tile, tile) if isinstance(tile, int) else tile
    if tr < 1 or tc < 1:
        raise ValueError(f"tile must be a positive int or (rows, cols), got {tile!r}")
    return int(tr), int(tc)


class TiledInfoNCEFn(torch.autograd.Function):
    """InfoNCE of rows ``x`` (B, D) against columns ``y`` (N, D); row i's positive is column
    ``offset + i``. ``col_reduce`` (optional) turns the local partial column LSE (N,) into the full
    one (the distributed gather); the loss covers the B rows and the B columns at ``offset``."""

    @staticmethod
    def forward(ctx, x, y, scale, mask, tile, offset=0, col_reduce=None):  # type: ignore[override]
        acc, n = acc_dtype(x, y), x.shape[0]
        s = scale.detach().to(acc)
        a = torch.full((n,), _NEG_INF, dtype=acc, device=x.device)
        b = torch.full((y.shape[0],), _NEG_INF, dtype=acc, device=x.device)
        lse_pass(x, y, s, a, b, row_offset=offset, mask=mask, tile=tile)
        if col_reduce is not None:
            b = col_reduce(b)
        diag = (x.to(acc) * y[offset : offset + n].to(acc)).sum(1)  # (B,) positives / scale
        ctx.save_for_backward(x, y, scale, a, b, diag)
        ctx.mask, ctx.tile, ctx.offset = mask, tile, offset
        pos = s * diag  # row-wise differences first: each is small, their sum loses nothing
        return 0.5 * ((a - pos).sum() + (b[offset : offset + n] - pos).sum()) / n

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, y, scale, a, b, diag = ctx.saved_tensors
        acc, n, off = a.dtype, x.shape[0], ctx.offset
        s = scale.detach().to(acc)
        xa, ya = x.to(acc), y.to(acc)
        gx, gy = torch.zeros_like(xa), torch.zeros_like(ya)
        grad_pass(x, y, s, a, b, gx, gy, row_offset=off, mask=ctx.mask, tile=ctx.tile)
        g = g.to(acc)
        c = 0.5 * g / n
        ds = c * (xa * gx).sum() - g * diag.sum() / n
        # in place: dX = c s gX - (g s / n) Y_pos, dY = c s gY - (g s / n) X at the positives
        dx = gx.mul_(c * s).addcmul_(ya[off : off + n], -g * s / n)
        dy = gy.mul_(c * s)
        dy[off : off + n].addcmul_(xa, -g * s / n)
        ds = ds.to(scale.dtype).reshape(scale.shape)
        return dx.to(x.dtype), dy.to(y.dtype), ds, None, None, None, None


class TiledSigLIPFn(torch.autograd.Function):
    """SigLIP of rows ``x`` (B, D) against columns ``y`` (N, D), positives at column ``offset + i``,
    normalised by B. Loss and gradients come out of one sweep; backward only scales them."""

    @staticmethod
    def forward(ctx, x, y, scale, bias, mask, tile, offset=0):  # type: ignore[override]
        acc, n = acc_dtype(x, y), x.shape[0]
        s, bb = scale.detach().to(acc), bias.detach().to(acc)
        want = any(ctx.needs_input_grad[:4])
        xa, ya = x.to(acc), y.to(acc)
        gx = torch.zeros_like(xa) if want else None
        gy = torch.zeros_like(ya) if want else None
        loss, gsum = siglip_pass(x, y, s, bb, row_offset=offset, mask=mask, tile=tile, gx=gx, gy=gy)
        yd = ya[offset : offset + n]
        diag = (xa * yd).sum(1)  # (B,)
        zd = s * diag + bb  # positives' logits
        loss = (loss + torch.nn.functional.softplus(-zd).sum()) / n
        if want:  # d softplus(-z)/dz = -sigmoid(-z)
            gd = -torch.sigmoid(-zd)  # (B,)
            ds = (xa * gx).sum() + (gd * diag).sum()
            gx.mul_(s / n).addcmul_(yd, (s * gd / n)[:, None])  # in place, no (B, D) temporaries
            gy.mul_(s / n)[offset : offset + n].addcmul_(xa, (s * gd / n)[:, None])
            ctx.save_for_backward(gx, gy, ds / n, (gsum + gd.sum()) / n)
        ctx.meta = (x.dtype, y.dtype, scale, bias)
        return loss

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return siglip_saved_backward(ctx, g)


def siglip_saved_backward(ctx, g: Tensor) -> tuple:
    """Backward of a SigLIP Function whose forward saved its gradients (gx, gy, d/ds, d/db) and
    ``ctx.meta = (x dtype, y dtype, scale, bias)``: scale them by the incoming ``g``."""
    gx, gy, ds, db = ctx.saved_tensors
    xd, yd, scale, bias = ctx.meta
    g = g.to(gx.dtype)
    return ((g * gx).to(xd), (g * gy).to(yd), (g * ds).to(scale.dtype).reshape(scale.shape),
            (g * db).to(bias.dtype).reshape(bias.shape), None, None, None)


def tiled_info_nce(
    image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float, *,
    mask: Tensor | None = None, labels: Tensor | None = None,
    tile: int | tuple[int, int] | None = None,
) -> Tensor:
    """Symmetric InfoNCE, exact, without the (B, B) logits. Same contract as ``losses.info_nce``.

    Args:
        image_emb, text_emb: (B, D) float32 / bfloat16 / float64 (accumulation in float32, or
            float64 for float64 inputs).
        logit_scale: scalar 1/tau (tensor with grad, or float).
        mask: optional (B, B) bool, True = off-diagonal pair is a false negative (excluded).
        labels: optional (B,) ints; pairs with equal labels are excluded (instead of ``mask``).
        tile: block edge, or (rows, cols); default from B, D and free memory (``auto_tile``).
    Returns:
        scalar loss in the accumulation dtype.
    """
    _check("tiled_info_nce", image_emb, text_emb)
    pm = make_mask(mask, labels, image_emb.shape[0], "tiled_info_nce")
    scale = _as_tensor(logit_scale, image_emb)
    return TiledInfoNCEFn.apply(image_emb, text_emb, scale, pm, _tile(tile))


def tiled_siglip(
    image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float,
    logit_bias: Tensor | float, *, mask: Tensor | None = None, labels: Tensor | None = None,
    tile: int | tuple[int, int] | None = None,
) -> Tensor:
    """Sigmoid loss (SigLIP), exact, without the (B, B) logits. Same contract as ``losses.siglip``.

    Masked pairs (``mask`` or equal ``labels``, never the diagonal) drop out of the sum; the
    normaliser stays B. Arguments as in :func:`tiled_info_nce`.
    """
    _check("tiled_siglip", image_emb, text_emb)
    pm = make_mask(mask, labels, image_emb.shape[0], "tiled_siglip")
    scale, bias = _as_tensor(logit_scale, image_emb), _as_tensor(logit_bias, image_emb)
    return TiledSigLIPFn.apply(image_emb, text_emb, scale, bias, pm, _tile(tile))
