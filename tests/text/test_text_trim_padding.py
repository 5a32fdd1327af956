"""With ``trim_padding`` the text encoder drops all-padding trailing columns before encoding
(text/encoder.py, ``model.text.trim_padding``): pooled features and their gradients must equal the
plain, untrimmed computation; without it the encoder sees every column."""

from pathlib import Path

import pytest
import torch

from modalab.config import load
from modalab.text.encoder import TextTransformer, trim_padding

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml"


def _tokens(lengths: list[int], width: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    out = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        out[i, :n] = torch.randint(1, 30, (n,), generator=g)
    return out


def test_trim_padding_keeps_every_real_token():
    tok = _tokens([3, 5, 2], 12)
    assert trim_padding(tok).shape == (3, 5)
    assert torch.equal(trim_padding(tok), tok[:, :5])
    full = _tokens([12, 4], 12)
    assert trim_padding(full) is full  # nothing to drop: the same tensor
    assert trim_padding(torch.zeros(2, 12, dtype=torch.long)).shape == (2, 1)


@pytest.mark.parametrize("pool", ["mean", "eos"])
def test_trimmed_forward_and_backward_match_untrimmed(pool):
    torch.manual_seed(0)
    enc = TextTransformer(vocab_size=30, context_length=12, width=32, depth=2, heads=4, pool=pool,
                          trim_padding=True).double()
    tok = _tokens([3, 8, 5, 1], 12)
    fast = enc(tok)  # trims to 8 columns
    grads_fast = torch.autograd.grad(fast.square().sum(), list(enc.parameters()), allow_unused=True)
    ref = enc.pool_tokens(enc.forward_tokens(tok), tok != 0)  # all 12 columns
    grads_ref = torch.autograd.grad(ref.square().sum(), list(enc.parameters()), allow_unused=True)
    assert fast.shape == ref.shape == (4, 32)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)
    for gf, gr in zip(grads_fast, grads_ref):
        gf = torch.zeros_like(gr) if gf is None else gf  # pos_embed rows of dropped columns: zero
        torch.testing.assert_close(gf, gr, rtol=1e-9, atol=1e-12)



def test_trim_padding_is_off_in_the_module_and_on_in_the_default_recipe():
    assert TextTransformer(vocab_size=30).trim_padding is False
    assert load(RECIPE, []).model.text.trim_padding is True  # the default recipe turns it on (issue 20)
    assert load(RECIPE, ["model.text.trim_padding=false"]).model.text.trim_padding is False
