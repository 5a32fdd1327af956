import pytest
import torch

from modalab import registry
from modalab.models.audio_lm import AudioLMConfig
from modalab.train.stages import set_trainable


def small_cfg(**kw):
    base = {"name": "audio_lm", "encoder": {"n_mels": 16, "dim": 16, "depth": 1, "heads": 2},
            "adapter": {"kind": "avg_pool", "k": 5}, "decoder": {"dim": 16, "depth": 1, "heads": 2, "max_len": 40}}
    base.update(kw)
    return AudioLMConfig.model_validate(base)


@pytest.mark.parametrize("kind", ["stride", "avg_pool", "conv"])
def test_audio_lm_rates_shapes_and_prefix(kind):
    torch.manual_seed(0)
    m = registry.build("model", "audio_lm", small_cfg(adapter={"kind": kind, "k": 5}), vocab_size=11)
    wave = torch.randn(2, 16000) * 0.1  # 1 s -> 100 mel frames -> 50 encoder frames -> 10 tokens
    assert m.audio_tokens(wave).shape == (2, 10, 16)
    tokens = torch.randint(4, 11, (2, 6))
    logits = m(wave, tokens)
    assert logits.shape == (2, 6, 11)
    # the audio tokens are the decoder's prefix
    torch.testing.assert_close(logits, m.decoder(tokens, prefix=m.audio_tokens(wave)))
    out = m.generate(wave, torch.ones(2, 1, dtype=torch.long), 4, eos_id=2)
    assert out.shape[0] == 2 and out.shape[1] <= 4


def test_audio_lm_language_embedding_and_lora_stages():
    torch.manual_seed(0)
    cfg = small_cfg(adapter={"kind": "stride", "k": 5, "n_langs": 3}, lora={"rank": 2, "alpha": 4.0})
    m = registry.build("model", "audio_lm", cfg, vocab_size=11)
    wave = torch.randn(1, 8000)
    a0, a1 = m.audio_tokens(wave, torch.tensor([0])), m.audio_tokens(wave, torch.tensor([1]))
    torch.testing.assert_close(a1 - a0, (m.adapter.lang.weight[1] - m.adapter.lang.weight[0]).expand_as(a0))
    names = [n for n, _ in m.named_parameters()]
    assert any("lora" in n for n in names)
    # stage 1: encoder + adapter; stage 2: adapter + decoder LoRA only
    n1 = set_trainable(m, ["encoder.*", "adapter.*"])
    assert n1 > 0 and not any(p.requires_grad for n, p in m.named_parameters() if n.startswith("decoder."))
    set_trainable(m, ["adapter.*", "decoder.*lora*"])
    live = {n for n, p in m.named_parameters() if p.requires_grad}
    assert live and all(n.startswith("adapter.") or "lora" in n for n in live)
    logits = m(wave, torch.tensor([[1, 5, 6]]))
    logits.sum().backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if "lora_b" in n)
