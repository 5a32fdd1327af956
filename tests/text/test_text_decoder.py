"""Causal decoder: causality, padding, prefix, adapters, KV cache; greedy and beam decoding."""

import itertools

import pytest
import torch

from modalab.text.decoder import BottleneckAdapter, TextDecoder
from modalab.text.generate import beam_search, greedy


def _dec(seed=0, vocab=13, depth=2):
    torch.manual_seed(seed)
    return TextDecoder(vocab_size=vocab, dim=16, depth=depth, heads=2, max_len=40).double().eval()


def test_causal_and_tied_head():
    dec = _dec()
    tokens = torch.randint(0, 13, (2, 8))
    out = dec(tokens)
    assert out.shape == (2, 8, 13)
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 13
    torch.testing.assert_close(dec(changed)[:, :5], out[:, :5], rtol=0, atol=0)
    assert dec.tok_emb.weight.data_ptr() in {p.data_ptr() for p in dec.parameters()}
    assert sum(p.shape == (13, 16) for p in dec.parameters()) == 1  # no separate output matrix


def test_left_and_right_padding_never_affect_real_positions():
    dec = _dec(1)
    tokens = torch.randint(1, 13, (1, 5))
    ref = dec(tokens)
    left = torch.cat([torch.tensor([[7, 7, 7]]), tokens], 1)
    lmask = torch.tensor([[False] * 3 + [True] * 5])
    torch.testing.assert_close(dec(left, attention_mask=lmask)[:, 3:], ref, rtol=1e-10, atol=1e-12)
    right = torch.cat([tokens, torch.tensor([[4, 4]])], 1)
    rmask = torch.tensor([[True] * 5 + [False] * 2])
    torch.testing.assert_close(dec(right, attention_mask=rmask)[:, :5], ref, rtol=1e-10, atol=1e-12)


def test_prefix_is_prepended_and_padded_prefix_is_ignored():
    dec = _dec(2)
    tokens = torch.randint(0, 13, (1, 4))
    prefix = torch.randn(1, 3, 16, dtype=torch.float64)
    out = dec(tokens, prefix=prefix)
    assert out.shape == (1, 4, 13)
    assert not torch.allclose(out, dec(tokens))
    padded = torch.cat([torch.randn(1, 2, 16, dtype=torch.float64) * 100, prefix], 1)
    pmask = torch.tensor([[False, False, True, True, True]])
    torch.testing.assert_close(dec(tokens, prefix=padded, prefix_mask=pmask), out, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="decoder.py: prefix"):
        dec(tokens, prefix=torch.randn(1, 3, 8, dtype=torch.float64))


def test_adapters_are_identity_at_init():
    dec = _dec(3)
    tokens = torch.randint(0, 13, (2, 6))
    before = dec(tokens)
    dec.insert_adapters(lambda i: BottleneckAdapter(16, 4).double())
    assert torch.equal(dec(tokens), before)


def test_kv_cache_logits_equal_full_recompute():
    dec = _dec(4)
    tokens = torch.randint(1, 13, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, :2] = False
    prefix = torch.randn(2, 3, 16, dtype=torch.float64)
    full = dec(tokens, prefix=prefix, attention_mask=mask)
    cache = dec.new_cache()
    parts = [dec(tokens[:, :5], prefix=prefix, attention_mask=mask[:, :5], cache=cache)]
    for t in range(5, 9):
        parts.append(dec(tokens[:, t : t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(parts, 1)[mask], full[mask], rtol=1e-10, atol=1e-12)


def test_greedy_with_cache_equals_recompute():
    dec = _dec(5)
    prompt = torch.randint(1, 13, (3, 4))
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1, 0] = False
    prefix = torch.randn(3, 2, 16, dtype=torch.float64)
    kw = dict(prompt_mask=mask, prefix=prefix, eos_id=3)
    a = greedy(dec, prompt, 10, **kw)
    b = greedy(dec, prompt, 10, use_cache=False, **kw)
    assert a.shape == (3, 10) and torch.equal(a, b)
    # after eos only pad
    for row in a.tolist():
        if 3 in row:
            assert all(t == 0 for t in row[row.index(3) + 1 :])


def test_beam_search_is_exhaustive_with_a_wide_beam_and_greedy_with_one():
    dec = _dec(6, vocab=4)
    prompt = torch.tensor([[1, 2], [3, 0]])
    steps = 3
    seq, score = beam_search(dec, prompt, steps, beam_size=16)
    seq_nc, score_nc = beam_search(dec, prompt, steps, beam_size=16, use_cache=False)
    assert torch.equal(seq, seq_nc)
    torch.testing.assert_close(score, score_nc)
    cands = torch.tensor(list(itertools.product(range(4), repeat=steps)))  # (64, steps)
    for b in range(2):
        full = torch.cat([prompt[b].expand(len(cands), -1), cands], 1)
        with torch.no_grad():
            logp = torch.log_softmax(dec(full), -1)[:, 1:-1]  # predictions of the candidate tokens
        s = logp.gather(-1, cands[..., None]).squeeze(-1).sum(-1)  # (64,)
        assert seq[b].tolist() == cands[s.argmax()].tolist()
        assert abs(float(score[b]) - float(s.max())) < 1e-9
    one, _ = beam_search(dec, prompt, 5, beam_size=1)
    assert torch.equal(one, greedy(dec, prompt, 5))


def test_beam_search_with_eos_and_length_penalty_cache_agrees():
    dec = _dec(7, vocab=6)
    prompt = torch.tensor([[1, 2, 4], [5, 1, 1]])
    mask = torch.tensor([[True] * 3, [False, True, True]])
    kw = dict(beam_size=3, eos_id=2, length_penalty=0.7, prompt_mask=mask)
    seq, score = beam_search(dec, prompt, 6, **kw)
    seq_nc, score_nc = beam_search(dec, prompt, 6, use_cache=False, **kw)
    assert torch.equal(seq, seq_nc)
    torch.testing.assert_close(score, score_nc, rtol=1e-10, atol=1e-12)
    for row in seq.tolist():
        if 2 in row:
            assert all(t == 0 for t in row[row.index(2) + 1 :])
