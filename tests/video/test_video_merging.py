"""ToMe bipartite matching and the streaming memory, against hand-made and brute-force cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modalab.video.merging import (
    StreamingMemory, ToMeBlock, ToMeEncoder, bipartite_soft_matching, merge_wavg,
)
from modalab.video.temporal import proportional_attention


@pytest.mark.parametrize("r", [0, 1, 3, 5, 8])
def test_merge_reduces_by_r_and_keeps_weighted_mean(r):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 6, dtype=torch.float64)
    size = torch.randint(1, 4, (2, 16, 1)).double()
    merge = bipartite_soft_matching(torch.randn(2, 16, 5, dtype=torch.float64), r)
    y, s = merge_wavg(merge, x, size)
    assert y.shape == (2, 16 - r, 6) and s.shape == (2, 16 - r, 1)
    torch.testing.assert_close(s.sum(1), size.sum(1))
    torch.testing.assert_close((y * s).sum(1) / s.sum(1), (x * size).sum(1) / size.sum(1))


def test_r_is_clamped_to_set_a():
    x = torch.randn(1, 7, 3)
    merge = bipartite_soft_matching(x, 100)  # |A| = 4
    assert merge(x, "mean").shape == (1, 3, 3)
    merge = bipartite_soft_matching(x, 100, protect_first=True)
    assert merge(x, "mean").shape == (1, 4, 3)


def test_matching_merges_most_similar_pair_brute_force():
    # tokens: A = 0, 2, 4 ; B = 1, 3, 5. Token 2 is a copy of 5 -> merged first.
    torch.manual_seed(1)
    m = F.normalize(torch.randn(1, 6, 8, dtype=torch.float64), dim=-1)
    m[0, 2] = m[0, 5]
    merge = bipartite_soft_matching(m, 1)
    x = torch.arange(6, dtype=torch.float64).reshape(1, 6, 1) * 10
    out = merge(x, "mean")[0, :, 0].tolist()
    assert sorted(out) == sorted([0.0, 40.0, 10.0, 30.0, (20.0 + 50.0) / 2])
    # brute force: the merged A token is the argmax over A of its best B similarity
    sims = m[0, ::2] @ m[0, 1::2].T
    assert int(sims.max(1).values.argmax()) == 1  # A index 1 = token 2


def test_protected_first_token_never_merged():
    torch.manual_seed(0)
    m = torch.randn(1, 8, 4)
    m[0, 0] = m[0, 1]  # most similar pair involves token 0
    merge = bipartite_soft_matching(m, 3, protect_first=True)
    x = torch.arange(8.0).reshape(1, 8, 1)
    assert 0.0 in merge(x, "mean")[0, :, 0].tolist()


def test_tome_block_and_encoder():
    torch.manual_seed(0)
    blk = ToMeBlock(16, 4, r=4).double()
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    y, size = blk(x)
    assert y.shape == (2, 16, 16) and torch.all(size.sum(1) == 20)
    y2, size2 = blk(y, size)
    assert y2.shape == (2, 12, 16) and torch.all(size2.sum(1) == 20)
    enc = ToMeEncoder(16, 3, 4, r=5)
    assert enc(torch.randn(2, 4, 8, 16)).shape == (2, 16)


def test_proportional_attention_counts_merged_tokens():
    """A token of size 2 attends like two identical tokens of size 1 (log-size bias)."""
    torch.manual_seed(0)
    blk = ToMeBlock(8, 2, r=0).double()
    a, b = torch.randn(2, 8, dtype=torch.float64)
    dup = torch.stack([a, b, b])[None]  # b twice
    merged = torch.stack([a, b])[None]
    out_dup, _ = proportional_attention(blk.attn, blk.norm1(dup))
    out_m, _ = proportional_attention(blk.attn, blk.norm1(merged),
                                      torch.tensor([[1.0, 2.0]], dtype=torch.float64).log())
    torch.testing.assert_close(out_m[0, 0], out_dup[0, 0])


def test_streaming_memory_merges_similar_neighbours():
    mem = StreamingMemory(capacity=3)
    e = torch.eye(4, dtype=torch.float64)
    stream = [e[0], e[0], e[0], e[1], e[2], e[2]]
    for t, f in enumerate(stream):
        mem.add(f, t)
        assert len(mem) <= 3
    torch.testing.assert_close(mem.features, torch.stack([e[0], e[1], e[2]]))
    assert mem.sizes.tolist() == [3.0, 1.0, 2.0]
    assert mem.spans == [(0.0, 2.0), (3.0, 3.0), (4.0, 5.0)]
    # size-weighted mean of everything seen is preserved
    total = (mem.features * mem.sizes[:, None]).sum(0) / mem.sizes.sum()
    torch.testing.assert_close(total, torch.stack(stream).mean(0))
    with pytest.raises(ValueError, match="capacity"):
        StreamingMemory(0)
