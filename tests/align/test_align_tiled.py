"""Tiled InfoNCE / SigLIP against the full-logits losses of align/losses.py: values and every
gradient (embeddings, logit_scale, logit_bias), with and without false-negative masks."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from modalab.align.losses import info_nce, same_label_mask, siglip
from modalab.align import tile_plan
from modalab.align.tile_plan import auto_tile, make_mask, mem_available_bytes
from modalab.align.tiled import tiled_info_nce, tiled_siglip

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _inputs(b: int, d: int, dtype: torch.dtype, seed: int = 0, norm: bool = True):
    g = torch.Generator().manual_seed(seed)
    x, y = (torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(2))
    if norm:
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    y = 0.6 * y + 0.4 * x  # positives more similar than negatives, as in training
    labels = torch.randint(0, 3, (b,), generator=g)
    return x.to(dtype), y.to(dtype), labels


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _run(fn, tensors, kw):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves, **(kw or {}))
    return [out, *torch.autograd.grad(out, leaves)]


def _compare(ref_fn, fast_fn, x, y, params, tol, ref_kw=None, fast_kw=None):
    """Value and gradients w.r.t. x, y and every scalar param agree with the full-logits loss.

    float64: relative error < ``tol``. float32: against the float64 truth, the tiled result is
    within ``tol`` relative (the loss relative to max(|loss|, 1)), or at least as accurate as the
    float32 full-logits loss itself
    (within 4x of its error; at scale 100 the loss is a difference of ~100-sized log-sum-exps).
    """
    ref = _run(ref_fn, (x, y, *params), ref_kw)
    out = _run(fast_fn, (x, y, *params), fast_kw)
    truth = _run(ref_fn, [t.double() for t in (x, y, *params)], ref_kw) \
        if x.dtype != torch.float64 else ref
    for name, a, r, t in zip(["loss", "image", "text", "scale", "bias"], out, ref, truth):
        assert a.shape == r.shape and a.dtype == r.dtype, name
        mag = t.abs().max().item() if name != "loss" or x.dtype == torch.float64 \
            else max(abs(t.item()), 1.0)  # float32 loss: its rounding follows the O(1) terms
        bound = max(tol * mag, 4 * _err(r, t), 1e-300)
        assert _err(a, t) <= bound, (name, _err(a, t), bound)


CASES = list(itertools.product(
    [torch.float64, torch.float32],
    [(2, 3, 4), (7, 5, 3), (33, 16, (8, 5)), (64, 8, 64), (50, 4, None)],  # (B, D, tile)
    [1.0, 14.3, 100.0],
))


@pytest.mark.parametrize("dtype,shape,scale", CASES)
def test_tiled_info_nce_matches_full_logits(dtype, shape, scale):
    b, d, tile = shape
    x, y, _ = _inputs(b, d, dtype)
    s = torch.tensor(scale, dtype=dtype)
    _compare(info_nce, tiled_info_nce, x, y, [s], TOL[dtype], fast_kw={"tile": tile})


@pytest.mark.parametrize("dtype,shape,scale", CASES)
def test_tiled_siglip_matches_full_logits(dtype, shape, scale):
    b, d, tile = shape
    x, y, _ = _inputs(b, d, dtype)
    s, bias = torch.tensor(scale, dtype=dtype), torch.tensor(-scale / 10, dtype=dtype)
    _compare(siglip, tiled_siglip, x, y, [s, bias], TOL[dtype], fast_kw={"tile": tile})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["dense", "labels", "all_masked_row"])
def test_masks_match_full_logits(dtype, kind):
    b, d = 29, 6
    x, y, labels = _inputs(b, d, dtype, seed=1)
    if kind == "dense":
        mask = torch.rand(b, b, generator=torch.Generator().manual_seed(2)) < 0.3
    elif kind == "labels":
        mask = same_label_mask(labels)
    else:  # row 3 and column 5 lose every negative; the diagonal is set True and must be ignored
        mask = torch.zeros(b, b, dtype=torch.bool)
        mask[3, :] = True
        mask[:, 5] = True
    fast = {"labels": labels} if kind == "labels" else {"mask": mask}
    for tile in [(4, 7), 16]:
        s = torch.tensor(20.0, dtype=dtype)
        _compare(info_nce, tiled_info_nce, x, y, [s], TOL[dtype], {"mask": mask},
                 {**fast, "tile": tile})
        bias = torch.tensor(-3.0, dtype=dtype)
        _compare(siglip, tiled_siglip, x, y, [s, bias], TOL[dtype], {"mask": mask},
                 {**fast, "tile": tile})


def test_columns_far_below_the_block_maximum_are_exact():
    """Scale 100 with a near-duplicate pair: other columns sit ~100 below the block maximum,
    where exp underflows in float32 (the exact per-column path takes over)."""
    x, y, _ = _inputs(40, 8, torch.float32, seed=3)
    y[7] = x[7]  # S_77 = 100 while column 12 is nearly orthogonal to everything
    y[12] = -x.mean(0) / x.mean(0).norm()
    x[12] = y[12]
    s = torch.tensor(100.0)
    _compare(info_nce, tiled_info_nce, x, y, [s], 1e-5, fast_kw={"tile": (40, 16)})
    x64, y64 = x.double(), y.double()
    _compare(info_nce, tiled_info_nce, x64 * 30, y64 * 30, [s.double()], 1e-10,
             fast_kw={"tile": 16})  # logits up to 9e4: far beyond float32's exp range


def test_batch_of_one_has_zero_infonce_and_exact_siglip():
    """B = 1: InfoNCE is identically 0 (no negatives); only rounding may differ."""
    x, y, _ = _inputs(1, 3, torch.float64)
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = tiled_info_nce(xs, ys, 14.3, tile=4)
    out.backward()
    assert abs(out.item()) < 1e-12 and xs.grad.abs().max() < 1e-12 and ys.grad.abs().max() < 1e-12
    _compare(siglip, tiled_siglip, x, y, [torch.tensor(14.3, dtype=torch.float64),
             torch.tensor(-2.0, dtype=torch.float64)], 1e-10, fast_kw={"tile": 4})


def test_unnormalised_inputs_and_python_float_scale():
    x, y, _ = _inputs(21, 7, torch.float64, seed=4, norm=False)
    torch.testing.assert_close(tiled_info_nce(x, y, 3.3, tile=8), info_nce(x, y, 3.3),
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(tiled_siglip(x, y, 3.3, -1.5, tile=8), siglip(x, y, 3.3, -1.5),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("fn", ["info_nce", "siglip"])
@pytest.mark.parametrize("lowp", [False, True])
def test_bfloat16_inputs_accumulate_in_float32(fn, lowp, monkeypatch):
    """bfloat16 embeddings: float32 GEMMs (AVX2 CPUs) or bfloat16 GEMMs (AMX / CUDA; forced)."""
    monkeypatch.setattr(tile_plan, "LOWP_MATMUL", lowp)
    x, y, _ = _inputs(70, 32, torch.float32, seed=5)
    x = x.requires_grad_()
    s, bias = torch.tensor(30.0, requires_grad=True), torch.tensor(-5.0, requires_grad=True)
    xb, yb = (t.detach().to(torch.bfloat16).requires_grad_() for t in (x, y))
    if fn == "info_nce":
        ref, out = info_nce(x, y, s), tiled_info_nce(xb, yb, s, tile=16)
    else:
        ref, out = siglip(x, y, s, bias), tiled_siglip(xb, yb, s, bias, tile=16)
    assert out.dtype == torch.float32
    assert abs(out.item() - ref.item()) / abs(ref.item()) < 1e-2
    out.backward()
    assert xb.grad.dtype == torch.bfloat16 and torch.isfinite(xb.grad.float()).all()
    gx_ref, gs_ref = torch.autograd.grad(ref, [x, s])
    assert _err(xb.grad, gx_ref) <= 0.05 * gx_ref.abs().max().item()  # bf16-accurate gradients
    assert abs(s.grad.item() - gs_ref.item()) <= 0.05 * abs(gs_ref.item())


def test_siglip_without_grad_and_info_nce_scale_shape():
    x, y, _ = _inputs(12, 4, torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(tiled_siglip(x, y, 2.0, -1.0, tile=5), siglip(x, y, 2.0, -1.0),
                                   rtol=1e-12, atol=0)
    s = torch.full((1,), 4.0, dtype=torch.float64, requires_grad=True)  # (1,)-shaped parameter
    tiled_info_nce(x, y, s.squeeze(), tile=5).backward()
    ref = torch.autograd.grad(info_nce(x, y, s.squeeze()), s)[0]
    assert s.grad.shape == (1,) and _err(s.grad, ref) < 1e-10 * ref.abs().item()


def test_auto_tile_respects_the_memory_budget():
    assert mem_available_bytes() is None or mem_available_bytes() > 0
    for n, d in [(131072, 512), (32768, 512), (4096, 64), (300, 16)]:
        tr, tc = auto_tile(n, n, d, torch.float32, budget_bytes=256 << 20)
        assert 1 <= tr <= n and 1 <= tc <= n
        assert 2 * 4 * tr * tc <= 256 << 20
        if n >= 4096:
            assert tr % 256 == 0 and tr >= 2048  # large blocks: the matmul runs near peak
    assert auto_tile(10, 10, 8) == (10, 10)
    assert auto_tile(8, 100000, 8, budget_bytes=1 << 20)[1] > 256  # short rows take wide columns


def test_errors_name_the_problem():
    x, y, labels = _inputs(6, 3, torch.float32)
    with pytest.raises(ValueError, match="same shape"):
        tiled_info_nce(x, y[:5], 1.0)
    with pytest.raises(ValueError, match=r"\(6, 6\) bool"):
        tiled_info_nce(x, y, 1.0, mask=torch.zeros(6, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="not both"):
        tiled_siglip(x, y, 1.0, 0.0, mask=torch.zeros(6, 6, dtype=torch.bool), labels=labels)
    with pytest.raises(ValueError, match="integer"):
        make_mask(None, labels.float(), 6, "f")
    with pytest.raises(ValueError, match="positive"):
        tiled_info_nce(x, y, 1.0, tile=0)


def test_registered_variants_pick_the_implementation():
    from modalab import registry
    from modalab.align.objectives_clip import TiledLossConfig

    x, y, labels = _inputs(40, 8, torch.float64, seed=6)
    s, bias = torch.tensor(9.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    mask = same_label_mask(labels)
    for name, ref in [("info_nce", info_nce(x, y, s, mask=mask)),
                      ("siglip", siglip(x, y, s, bias, mask=mask))]:
        outs = []
        for impl, thr in [("naive", 4096), ("tiled", 4096), ("auto", 16), ("auto", 4096)]:
            cfg = TiledLossConfig(name=name, impl=impl, auto_threshold=thr, tile=16,
                                  mask_same_label=True)
            obj = registry.build("loss", name, cfg)
            outs.append(obj(x, y, logit_scale=s, logit_bias=bias, labels=labels))
        for out in outs:
            torch.testing.assert_close(out, ref, rtol=1e-12, atol=0)
    obj = registry.build("loss", "siglip", TiledLossConfig(name="siglip"))
    with pytest.raises(ValueError, match="logit bias"):
        obj(x, y, logit_scale=s)
    with pytest.raises(ValueError):
        TiledLossConfig(name="info_nce", impl="fast")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("spread", [1.0, 30.0, 200.0])  # 200: beyond the one-exponential path
def test_two_softmaxes_one_exponential_path_and_fallback(dtype, spread):
    """G = exp(S - a_i) + exp(S - b_j), from one exponential when max a - min b is small enough,
    from two otherwise; compared with float64 on masked and unmasked logits."""
    from modalab.align.tiled import _two_softmaxes

    g = torch.Generator().manual_seed(1)
    s = torch.randn(12, 9, generator=g, dtype=torch.float64) * 3
    s[2, 4] = float("-inf")  # a masked pair
    # global LSEs are at least this tile's: rows may carry much more mass from other tiles
    a = torch.logsumexp(s, 1) + spread * torch.rand(12, generator=g, dtype=torch.float64)
    b = torch.logsumexp(s, 0) + torch.rand(9, generator=g, dtype=torch.float64)
    want = (s - a[:, None]).exp() + (s - b[None, :]).exp()
    got = _two_softmaxes(s.to(dtype).clone(), a.to(dtype), b.to(dtype), torch.empty(200, dtype=dtype))
    assert got[2, 4] == 0
    if dtype == torch.float64:
        assert ((got - want).abs() / want.clamp_min(1e-300)).max() < 1e-12
    else:  # relative where float32 represents the value, absolute (~1e-21) below that
        assert ((got.double() - want).abs() - 1e-5 * want).max() < 1e-20


@pytest.mark.parametrize("fn", ["info_nce", "siglip"])
def test_bfloat16_gemm_path_at_moderate_batch_against_float64(fn, monkeypatch):
    """The bf16 GEMM path (AMX / CUDA; forced here) at B = 1024 with 1/tau = 100: the loss within
    1e-2 relative of the float64 reference, every sum accumulated in float32."""
    monkeypatch.setattr(tile_plan, "LOWP_MATMUL", True)
    x, y, _ = _inputs(1024, 64, torch.float64, seed=11)
    s64, b64 = torch.tensor(100.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    xb, yb = (t.to(torch.bfloat16).requires_grad_() for t in (x, y))
    s, bias = torch.tensor(100.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
    if fn == "info_nce":
        ref, out = info_nce(x, y, s64), tiled_info_nce(xb, yb, s, tile=256)
    else:
        ref, out = siglip(x, y, s64, b64), tiled_siglip(xb, yb, s, bias, tile=256)
    assert out.dtype == torch.float32
    assert abs(out.item() - ref.item()) / abs(ref.item()) < 1e-2
    out.backward()
    xr = x.detach().requires_grad_()
    gx_ref = torch.autograd.grad(info_nce(xr, y, s64) if fn == "info_nce" else siglip(xr, y, s64, b64), xr)[0]
    assert _err(xb.grad, gx_ref) <= 0.05 * gx_ref.abs().max().item()
