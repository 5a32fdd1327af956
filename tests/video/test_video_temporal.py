"""Temporal modules against plain references: SDPA attention, divided attention at init,
factorised encoder, pools and tube masks."""

from __future__ import annotations

import math

import pytest
import torch

from modalab.layers import Attention
from modalab.video.temporal import (
    AttentionPool, DividedSpaceTimeBlock, FactorisedEncoder, MeanPool, transformer,
    proportional_attention, tube_mask,
)


def _ref_attention(attn: Attention, x: torch.Tensor, bias=None) -> torch.Tensor:
    b, n, d = x.shape
    h = attn.heads
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, n, h, d // h).transpose(1, 2) for t in (q, k, v))
    logits = q @ k.transpose(-1, -2) / math.sqrt(d // h)
    if bias is not None:
        logits = logits + bias[:, None, None, :]
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
    return attn.proj(out)


def test_attention_matches_reference_values_and_grads():
    torch.manual_seed(0)
    attn = Attention(16, 4).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64, requires_grad=True)
    bias = torch.rand(2, 7, dtype=torch.float64).log()
    for b in (None, bias):
        out, keys = proportional_attention(attn, x, b)
        ref = _ref_attention(attn, x, b)
        torch.testing.assert_close(out, ref)
        g1 = torch.autograd.grad(out.square().sum(), x)[0]
        g2 = torch.autograd.grad(ref.square().sum(), x)[0]
        torch.testing.assert_close(g1, g2)
    assert keys.shape == (2, 7, 4)


def test_divided_block_at_init_equals_spatial_only():
    torch.manual_seed(0)
    blk = DividedSpaceTimeBlock(16, 4).double()
    x = torch.randn(2, 5, 6, 16, dtype=torch.float64)
    torch.testing.assert_close(blk(x), blk(x, temporal=False))
    # spatial-only = each frame through the plain spatial block independently
    frame = blk(x[:, 2:3], temporal=False)
    torch.testing.assert_close(blk(x)[:, 2:3], frame)
    # the temporal path still receives gradient through the zero projection's weight
    blk(x).sum().backward()
    assert blk.temporal_fc.weight.grad.abs().sum() > 0


def test_divided_block_mixes_time_once_temporal_projection_is_nonzero():
    torch.manual_seed(0)
    blk = DividedSpaceTimeBlock(16, 4).double()
    torch.nn.init.normal_(blk.temporal_fc.weight, std=0.1)
    x = torch.randn(1, 4, 3, 16, dtype=torch.float64)
    y = x.clone()
    y[:, 3] += torch.randn(3, 16, dtype=torch.float64)  # change only the last frame
    diff = (blk(x) - blk(y)).abs()
    assert diff[:, 0].max() > 1e-6  # frame 0 now sees frame 3
    blk0 = DividedSpaceTimeBlock(16, 4).double()
    diff0 = (blk0(x) - blk0(y)).abs()
    assert diff0[:, 0].max() == 0  # at init frames are independent


def test_factorised_encoder_shapes_and_frame_order_sensitivity():
    torch.manual_seed(0)
    enc = FactorisedEncoder(16, transformer(16, 1, 4), transformer(16, 1, 4)).double()
    x = torch.randn(3, 4, 5, 16, dtype=torch.float64)
    out = enc(x)
    assert out.shape == (3, 16)
    # a frame's spatial summary ignores other frames: permuting tokens within a frame is a no-op
    perm = torch.randperm(5)
    torch.testing.assert_close(enc(x[:, :, perm]), out)
    # the batch is independent
    torch.testing.assert_close(enc(x[1:2]), out[1:2])


def test_mean_and_attention_pool():
    x = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4)
    torch.testing.assert_close(MeanPool()(x), x.mean(1))
    mask = torch.tensor([[True, True, False], [True, False, False]])
    torch.testing.assert_close(MeanPool()(x, mask), torch.stack([x[0, :2].mean(0), x[1, 0]]))
    pool = AttentionPool(4).double()
    # zero query -> uniform weights -> mean of values
    value = pool.attn.v_proj
    torch.testing.assert_close(pool(x), value(x).mean(1))
    torch.testing.assert_close(pool(x, mask)[1], value(x)[1, 0])


def test_tube_mask():
    g = torch.Generator().manual_seed(0)
    m = tube_mask(3, 8, 49, ratio=0.9, generator=g)
    assert m.shape == (3, 8, 49) and m.dtype == torch.bool
    assert (m.sum(-1) == int(0.9 * 49)).all()  # exactly 44 per frame
    assert (m == m[:, :1]).all()  # same 2D mask at every time step
    assert not (m[0] == m[1]).all()  # different per video
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(tube_mask(3, 8, 49, generator=g2), m)
    with pytest.raises(ValueError, match="ratio"):
        tube_mask(1, 2, 4, ratio=1.0)
