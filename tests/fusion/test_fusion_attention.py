"""SDPA multi-head attention against the naive softmax(QK^T)V reference, masks and KV caches."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modalab.layers.attention import KVCache, multi_head_attention, naive_attention


def _reference(mha, x, ctx, mask):
    """Same projections, naive attention. mask (B, 1|H, T, S) bool or None."""
    q, k, v = mha._heads(mha.q_proj(x)), mha._heads(mha.k_proj(ctx)), mha._heads(mha.v_proj(ctx))
    out = naive_attention(q, k, v, mask)
    return mha.out_proj(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


def test_cross_attention_matches_naive_values_and_grads_float64():
    torch.manual_seed(0)
    mha = multi_head_attention(16, 4, kv_dim=12).double()
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    ctx = torch.randn(3, 7, 12, dtype=torch.float64, requires_grad=True)
    key_mask = torch.rand(3, 7) > 0.3
    key_mask[:, 0] = True
    attn_mask = torch.rand(3, 5, 7) > 0.4
    attn_mask[0, 2] = False  # an empty row: output must be exactly zero, not NaN
    out = mha(x, ctx, key_mask=key_mask, attn_mask=attn_mask)
    full = attn_mask[:, None] & key_mask[:, None, None]
    ref = _reference(mha, x, ctx, full)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    assert torch.isfinite(out).all()
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), [x, ctx, *mha.parameters()])
    grads_ref = torch.autograd.grad((ref * g).sum(), [x, ctx, *mha.parameters()])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_empty_row_output_is_exactly_out_proj_of_zero():
    torch.manual_seed(0)
    mha = multi_head_attention(8, 2, bias=False)
    x, ctx = torch.randn(1, 2, 8), torch.randn(1, 3, 8)
    attn_mask = torch.tensor([[[False] * 3, [True] * 3]])
    out = mha(x, ctx, attn_mask=attn_mask)
    assert torch.equal(out[0, 0], torch.zeros(8))


def test_masked_keys_never_affect_outputs():
    torch.manual_seed(1)
    mha = multi_head_attention(16, 4)
    x, ctx = torch.randn(2, 4, 16), torch.randn(2, 6, 16)
    key_mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    out = mha(x, ctx, key_mask=key_mask)
    ctx2 = ctx.clone()
    ctx2[0, 4:] = 1e3 * torch.randn(2, 16)
    torch.testing.assert_close(mha(x, ctx2, key_mask=key_mask), out)
    torch.testing.assert_close(mha(x[:1], ctx[:1, :4]), out[:1], rtol=1e-5, atol=1e-6)


def test_causal_self_attention_with_cache_equals_full():
    torch.manual_seed(2)
    mha = multi_head_attention(16, 4).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    full = mha(x, is_causal=True)
    cache = KVCache()
    parts = [mha(x[:, :4], is_causal=True, cache=cache)]
    for t in range(4, 9):
        parts.append(mha(x[:, t : t + 1], is_causal=True, cache=cache))
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-10, atol=1e-12)
    assert cache.length == 9


def test_static_cache_reuses_projected_media():
    torch.manual_seed(3)
    mha = multi_head_attention(8, 2, kv_dim=6)
    x, ctx = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    cache = KVCache(static=True)
    a = mha(x, ctx, cache=cache)
    b = mha(x, ctx * 0 + 123.0, cache=cache)  # context ignored once cached
    torch.testing.assert_close(a, b)
    assert cache.length == 5


def test_bad_key_mask_shape_names_the_file():
    mha = multi_head_attention(8, 2)
    with pytest.raises(ValueError, match="attention.py.*key_mask"):
        mha(torch.randn(2, 3, 8), key_mask=torch.ones(2, 4, dtype=torch.bool))


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    b=st.integers(1, 3), t=st.integers(1, 6), s=st.integers(1, 9), heads=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 10_000), p_keep=st.floats(0.0, 1.0),
)
def test_property_sdpa_equals_naive_under_random_masks(b, t, s, heads, seed, p_keep):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mha = multi_head_attention(8, heads, kv_dim=5).double()
    x = torch.randn(b, t, 8, dtype=torch.float64, generator=g)
    ctx = torch.randn(b, s, 5, dtype=torch.float64, generator=g)
    key_mask = torch.rand(b, s, generator=g) < p_keep
    attn_mask = torch.rand(b, t, s, generator=g) < 0.7
    out = mha(x, ctx, key_mask=key_mask, attn_mask=attn_mask)
    ref = _reference(mha, x, ctx, attn_mask[:, None] & key_mask[:, None, None])
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
