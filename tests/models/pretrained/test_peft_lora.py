"""peft LoRA on a wrapped causal LM: identity at start, only adapters train, saved adapters reload."""

from __future__ import annotations

import pytest
import torch

from modalab.models.pretrained.load import load_causal_lm
from modalab.models.pretrained.source import PretrainedError

pytest.importorskip("peft")
from modalab.models.pretrained.peft_lora import apply_lora, load_adapter, save_adapter  # noqa: E402


@pytest.mark.parametrize("family,targets", [("qwen2", ["q_proj", "v_proj"]), ("gpt2", ["c_attn"])])
def test_lora_trains_saves_and_reloads(family, targets, tmp_path, gpt2_dir, qwen2_dir):
    folder = qwen2_dir if family == "qwen2" else gpt2_dir
    lm = load_causal_lm(f"hf:{folder}")
    ids = torch.randint(3, 98, (2, 8))
    with torch.no_grad():
        before = lm(ids)
    apply_lora(lm, targets, rank=4)
    with torch.no_grad():
        torch.testing.assert_close(lm(ids), before)  # B = 0: unchanged at start
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    opt = torch.optim.SGD([p for p in lm.parameters() if p.requires_grad], lr=0.5)
    lm.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(lm(ids[:, :-1]).reshape(-1, 99), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.eval()
    with torch.no_grad():
        after = lm(ids)
    assert (after - before).abs().max() > 1e-4
    out = save_adapter(lm, tmp_path / "adapter")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    fresh = load_adapter(load_causal_lm(f"hf:{folder}"), out)
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids), after, atol=1e-5, rtol=1e-5)


def test_lora_errors(tmp_path, gpt2_dir):
    lm = load_causal_lm(f"hf:{gpt2_dir}")
    with pytest.raises(PretrainedError, match="not module names"):
        apply_lora(lm, ["q_proj"])
    with pytest.raises(PretrainedError, match="no peft adapters"):
        save_adapter(lm, tmp_path / "x")
    with pytest.raises(PretrainedError, match="missing adapter_config.json"):
        load_adapter(lm, tmp_path)
