"""A modalab TextDecoder exported as GPT-2 gives the same logits in transformers."""

from __future__ import annotations

import pytest
import torch

from modalab.models.pretrained.export_decoder import export_decoder_hf
from modalab.models.pretrained.source import PretrainedError
from modalab.text.decoder import BottleneckAdapter, TextDecoder

transformers = pytest.importorskip("transformers")


def _decoder() -> TextDecoder:
    torch.manual_seed(0)
    dec = TextDecoder(vocab_size=53, dim=32, depth=2, heads=4, max_len=24, mlp_ratio=4).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for n, p in dec.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return dec


def test_gpt2_export_same_logits(tmp_path):
    dec = _decoder()
    out = export_decoder_hf(dec, tmp_path / "gpt2")
    ref = transformers.GPT2LMHeadModel.from_pretrained(str(out)).eval()
    ids = torch.randint(1, 53, (3, 11))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 8:] = False  # right padding
    with torch.no_grad():
        ours = dec(ids, attention_mask=mask)
        theirs = ref(input_ids=ids, attention_mask=mask.long()).logits
    torch.testing.assert_close(ours[mask], theirs[mask], atol=1e-5, rtol=1e-5)
    assert ref.config.tie_word_embeddings and ref.lm_head.weight.data_ptr() == ref.transformer.wte.weight.data_ptr()


def test_gpt2_export_refuses_adapters(tmp_path):
    dec = _decoder()
    dec.insert_adapters(lambda i: BottleneckAdapter(32, 8))
    with pytest.raises(PretrainedError, match="adapter"):
        export_decoder_hf(dec, tmp_path / "x")
