"""KV-cached decoding equals re-encoding the whole prefix (values, float64), for the fused-qkv
``Attention`` on its own and for the unified model's ``generate_codes`` / ``answer``."""

import pytest
import torch

from modalab.layers import Attention, KVCache, naive_attention
from modalab.models.unified import UnifiedTransformer


def test_attention_with_a_cache_matches_full_causal_attention():
    torch.manual_seed(0)
    attn = Attention(16, 4).double().eval()
    x = torch.randn(3, 9, 16, dtype=torch.float64)
    full = attn(x, is_causal=True)  # (3, 9, 16)
    cache = KVCache()
    parts = [attn(x[:, :4], is_causal=True, cache=cache)]  # a prefill of 4 positions
    for t in range(4, 9):
        parts.append(attn(x[:, t : t + 1], is_causal=True, cache=cache))
    assert cache.length == 9
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-10, atol=1e-10)


def test_cached_chunk_is_causal_at_absolute_positions_with_a_key_mask():
    torch.manual_seed(1)
    attn = Attention(8, 2).double().eval()
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    real = torch.ones(2, 7, dtype=torch.bool)
    real[1, 2] = False  # one padded key in row 1
    cache = KVCache()
    attn(x[:, :3], attn_mask=real[:, None, None, :3], is_causal=True, cache=cache)
    chunk = attn(x[:, 3:], attn_mask=real[:, None, None, :], is_causal=True, cache=cache)  # (2, 4, 8)
    # reference: softmax over keys j <= i that are real, from the same projections
    b, n, d = x.shape
    q, k, v = attn.qkv(x).view(b, n, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
    mask = torch.ones(n, n, dtype=torch.bool).tril()[None, None] & real[:, None, None, :]
    ref = attn.proj(naive_attention(q, k, v, mask).transpose(1, 2).reshape(b, n, d))[:, 3:]
    torch.testing.assert_close(chunk, ref, rtol=1e-10, atol=1e-10)


def test_float_bias_and_causal_combine():
    torch.manual_seed(2)
    attn = Attention(8, 2).double().eval()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    bias = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    out = attn(x, attn_mask=bias, is_causal=True)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    ref = attn(x, attn_mask=bias.masked_fill(~causal, float("-inf")))
    torch.testing.assert_close(out, ref)


def _model() -> UnifiedTransformer:
    torch.manual_seed(3)
    return UnifiedTransformer(text_vocab=11, codebook_size=13, image_tokens=6, dim=32, depth=2,
                              heads=4, max_text=5).double().eval()


@pytest.mark.parametrize("temperature,top_k", [(0.0, None), (1.0, None), (0.8, 5)])
def test_generate_codes_with_cache_equals_the_reference(temperature, top_k):
    m = _model()
    text = torch.randint(0, 11, (4, 5))
    pad = torch.zeros(4, 5, dtype=torch.bool)
    pad[1, 3:] = True
    pad[2, 4:] = True
    out = {}
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(7)
        out[use_cache] = m.generate_codes(text, pad, temperature=temperature, top_k=top_k,
                                          generator=g, use_cache=use_cache)
    assert torch.equal(out[True], out[False])
    assert out[True].shape == (4, 6) and out[True].min() >= 0 and out[True].max() < 13


def test_cached_step_logits_match_full_logits():
    m = _model()
    text, codes = torch.randint(0, 11, (2, 5)), torch.randint(0, 13, (2, 6))
    ids = m.generate_sequence(text, codes)  # (2, 13)
    full = m.logits(ids)  # (2, 13, vocab)
    caches = m.new_caches()
    first = m.logits_step(ids[:, :7], ids[:, :7], None, None, caches)
    steps = [first] + [m.logits_step(ids[:, t : t + 1], ids[:, : t + 1], None, None, caches)
                       for t in range(7, 13)]
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 6:], rtol=1e-9, atol=1e-9)


def test_answer_with_cache_equals_the_reference_and_reads_features():
    m = _model()
    codes = torch.randint(0, 13, (3, 6))
    assert torch.equal(m.answer(codes, 4, use_cache=True), m.answer(codes, 4, use_cache=False))
    torch.manual_seed(4)
    mf = UnifiedTransformer(11, 13, 6, dim=32, depth=2, heads=4, max_text=5,
                            feature_dim=10).double().eval()
    feats = torch.randn(3, 6, 10, dtype=torch.float64)
    assert torch.equal(mf.answer(codes, 4, features=feats),
                       mf.answer(codes, 4, features=feats, use_cache=False))


def test_cache_errors_name_the_problem():
    m = _model()
    with pytest.raises(ValueError, match="caches for 2 blocks"):
        m.hidden(torch.zeros(1, 3, dtype=torch.long), caches=[KVCache()])
    caches = m.new_caches()
    m.hidden(torch.zeros(1, 14, dtype=torch.long), caches=caches)
    with pytest.raises(ValueError, match="max_len"):
        m.hidden(torch.zeros(1, 1, dtype=torch.long), caches=caches)
