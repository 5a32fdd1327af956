"""Gated cross-attention: identity at init, only the most recent preceding media, masks."""

import torch

from modalab.fusion.cross_attention import (
    GatedCrossAttentionBlock,
    media_attention_mask,
    media_index_from_locations,
)
from modalab.text.decoder import TextDecoder


def _decoder_pair(seed=0):
    torch.manual_seed(seed)
    base = TextDecoder(vocab_size=13, dim=16, depth=3, heads=2, max_len=32).double().eval()
    fused = TextDecoder(vocab_size=13, dim=16, depth=3, heads=2, max_len=32).double().eval()
    fused.load_state_dict(base.state_dict())
    fused.insert_cross_layers(
        lambda i: GatedCrossAttentionBlock(16, 10, heads=2, head_dim=8).double() if i % 2 == 0 else None)
    return base, fused


def test_media_index_from_locations():
    loc = torch.tensor([[False, True, False, False, True, False]])
    assert media_index_from_locations(loc).tolist() == [[-1, 0, 0, 0, 1, 1]]
    m = media_attention_mask(torch.tensor([[-1, 0, 1]]), num_media=2, tokens_per_media=2)
    assert m.tolist() == [[[False] * 4, [True, True, False, False], [False, False, True, True]]]
    m_all = media_attention_mask(torch.tensor([[-1, 0, 1]]), 2, 2, only_immediate=False)
    assert m_all[0, 2].tolist() == [True] * 4


def test_gates_at_zero_leave_decoder_outputs_exactly_unchanged():
    base, fused = _decoder_pair()
    tokens = torch.randint(0, 13, (2, 7))
    media = torch.randn(2, 2, 3, 10, dtype=torch.float64)
    idx = media_index_from_locations(torch.tensor([[1, 0, 0, 1, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0]]).bool())
    out = fused(tokens, cross_inputs={"media": media, "media_index": idx})
    assert torch.equal(out, base(tokens))


def test_no_attention_to_later_media_or_masked_media():
    torch.manual_seed(1)
    blk = GatedCrossAttentionBlock(16, 10, heads=2, head_dim=8).double()
    with torch.no_grad():
        blk.attn_gate.fill_(0.7)
        blk.ff_gate.fill_(-0.4)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    media = torch.randn(2, 3, 4, 10, dtype=torch.float64)
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[:, 0, 3] = False
    idx = torch.tensor([[-1, 0, 0, 1, 1, 2], [0, 0, 0, 0, 1, 1]])
    out = blk(x, media, mask, idx)
    later = media.clone()
    later[:, 2] += 10 * torch.randn(2, 4, 10, dtype=torch.float64)  # media 2
    later[0, 0, 3] = 1e4  # a masked token of media 0
    out2 = blk(x, later, mask, idx)
    torch.testing.assert_close(out2[0, :5], out[0, :5], rtol=0, atol=0)
    torch.testing.assert_close(out2[1], out[1], rtol=0, atol=0)
    assert not torch.allclose(out2[0, 5], out[0, 5])  # token 5 does look at media 2
    # only the immediate media: changing media 0 leaves tokens of media 1 alone
    earlier = media.clone()
    earlier[:, 0] += 1.0
    out3 = blk(x, earlier, mask, idx)
    torch.testing.assert_close(out3[0, 3:], out[0, 3:], rtol=0, atol=0)
    # a token before any media gets no attention output: only the gated FF acts on it
    expect = x[0, 0] + torch.tanh(blk.ff_gate) * blk.ff(x[0:1, 0:1])[0, 0]
    torch.testing.assert_close(out[0, 0], expect)


def test_matches_per_token_reference():
    torch.manual_seed(2)
    blk = GatedCrossAttentionBlock(8, 6, heads=2, head_dim=4).double()
    with torch.no_grad():
        blk.attn_gate.fill_(0.5)
    x = torch.randn(1, 4, 8, dtype=torch.float64)
    media = torch.randn(1, 2, 3, 6, dtype=torch.float64)
    idx = torch.tensor([[0, 0, 1, 1]])
    out = blk(x, media, None, idx)
    for t in range(4):
        # the token alone against its own media, no mask at all
        ref_attn = blk.attn(blk.norm(x[:, t : t + 1]), media[:, idx[0, t]])
        y = x[:, t : t + 1] + torch.tanh(blk.attn_gate) * ref_attn
        y = y + torch.tanh(blk.ff_gate) * blk.ff(y)
        torch.testing.assert_close(out[:, t : t + 1], y, rtol=1e-10, atol=1e-12)


def test_generation_with_cross_layers_cache_equals_recompute():
    from modalab.text.generate import beam_search, greedy

    _, dec = _decoder_pair(3)
    for blk in dec.blocks:
        if blk.cross is not None:
            torch.nn.init.normal_(blk.cross.attn_gate)
            torch.nn.init.normal_(blk.cross.ff_gate)
    prompt = torch.randint(1, 13, (2, 4))
    media = torch.randn(2, 2, 3, 10, dtype=torch.float64)
    mmask = torch.ones(2, 2, 3, dtype=torch.bool)
    mmask[1, 1, 2] = False
    idx = torch.tensor([[0, 0, 1, 1], [-1, 0, 0, 0]])
    ci = {"media": media, "media_mask": mmask, "media_index": idx}
    a = greedy(dec, prompt, 6, cross_inputs=ci)
    assert torch.equal(a, greedy(dec, prompt, 6, cross_inputs=ci, use_cache=False))
    s, sc = beam_search(dec, prompt, 5, beam_size=3, cross_inputs=ci)
    s2, sc2 = beam_search(dec, prompt, 5, beam_size=3, cross_inputs=ci, use_cache=False)
    assert torch.equal(s, s2)
    torch.testing.assert_close(sc, sc2, rtol=1e-10, atol=1e-12)
