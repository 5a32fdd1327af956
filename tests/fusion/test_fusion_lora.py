"""LoRA wrapper: identical to the base at init, merge == unmerged forward, unmerge restores."""

import pytest
import torch
from torch import nn

from modalab.fusion.lora import LoRALinear, apply_lora, lora_modules, merge_lora, unmerge_lora
from modalab.text.decoder import TextDecoder


def test_zero_init_b_is_identical_to_base():
    torch.manual_seed(0)
    base = nn.Linear(8, 6).double()
    lora = LoRALinear(base, rank=2, alpha=4.0)
    x = torch.randn(3, 8, dtype=torch.float64)
    assert torch.equal(lora(x), base(x))
    assert not base.weight.requires_grad and lora.lora_a.requires_grad


def test_forward_is_base_plus_scaled_low_rank_and_merge_matches():
    torch.manual_seed(1)
    base = nn.Linear(8, 6).double()
    w0 = base.weight.detach().clone()
    lora = LoRALinear(base, rank=3, alpha=6.0)
    with torch.no_grad():
        lora.lora_b.normal_()
    x = torch.randn(4, 8, dtype=torch.float64)
    ref = x @ (w0 + 2.0 * lora.lora_b @ lora.lora_a).t() + base.bias
    y = lora(x)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    lora.merge()
    torch.testing.assert_close(lora(x), y, rtol=1e-12, atol=1e-12)
    lora.merge()  # idempotent
    torch.testing.assert_close(lora(x), y, rtol=1e-12, atol=1e-12)
    lora.unmerge()
    torch.testing.assert_close(base.weight, w0, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(lora(x), y, rtol=1e-12, atol=1e-12)


def test_gradients_reach_only_the_low_rank_factors():
    torch.manual_seed(2)
    lora = LoRALinear(nn.Linear(5, 5), rank=2, dropout=0.1)
    lora(torch.randn(4, 5)).sum().backward()
    assert lora.base.weight.grad is None
    assert lora.lora_b.grad is not None and lora.lora_a.grad is not None


def test_apply_lora_to_decoder_attention():
    torch.manual_seed(3)
    dec = TextDecoder(vocab_size=11, dim=16, depth=2, heads=2, max_len=16).double().eval()
    tokens = torch.randint(0, 11, (2, 6))
    before = dec(tokens)
    names = apply_lora(dec, ["q_proj", "v_proj"], rank=2, alpha=2.0)
    assert names == ["blocks.0.attn.q_proj", "blocks.0.attn.v_proj", "blocks.1.attn.q_proj", "blocks.1.attn.v_proj"]
    assert torch.equal(dec(tokens), before)
    with torch.no_grad():
        for m in lora_modules(dec):
            m.lora_b.normal_()
    after = dec(tokens)
    assert not torch.allclose(after, before)
    merge_lora(dec)
    torch.testing.assert_close(dec(tokens), after, rtol=1e-10, atol=1e-10)
    unmerge_lora(dec)
    torch.testing.assert_close(dec(tokens), after, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="lora.py.*no nn.Linear"):
        apply_lora(dec, ["nope"], rank=2)
