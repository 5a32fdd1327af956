"""Causal language models (GPT-2, Llama, Qwen2, ... folders) wrapped behind a small decoder interface.

These are not converted: ``transformers.AutoModelForCausalLM`` runs them (its implementations
track each family's details: RoPE variants, grouped-query attention, tied heads). The wrapper gives
modalab's connectors what they need:

- ``embed(tokens)``: (B, T) ids -> (B, T, hidden) input embeddings;
- ``forward(tokens, attention_mask=None, prefix=None)``: logits (B, T, vocab) of the text
  positions; ``prefix`` (B, P, hidden) embeddings are prepended (LLaVA-style visual tokens) and
  always attended to;
- ``hidden_size`` and ``vocab_size``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from modalab.models.pretrained.source import PretrainedError, hf_config


class HFCausalLM(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.hidden_size = int(model.config.hidden_size)
        self.vocab_size = int(model.config.vocab_size)

    def embed(self, tokens: Tensor) -> Tensor:
        """(B, T) -> (B, T, hidden)."""
        return self.model.get_input_embeddings()(tokens)

    def forward(self, tokens: Tensor, attention_mask: Tensor | None = None, prefix: Tensor | None = None) -> Tensor:
        """(B, T) ids [+ (B, P, hidden) prefix] -> (B, T, vocab) logits of the text positions."""
        if prefix is None:
            return self.model(input_ids=tokens, attention_mask=attention_mask).logits
        b, p = prefix.shape[:2]
        emb = torch.cat([prefix, self.embed(tokens).to(prefix.dtype)], dim=1)  # (B, P + T, hidden)
        mask = None
        if attention_mask is not None:
            ones = torch.ones(b, p, dtype=attention_mask.dtype, device=attention_mask.device)
            mask = torch.cat([ones, attention_mask], dim=1)  # (B, P + T)
        return self.model(inputs_embeds=emb, attention_mask=mask).logits[:, p:]


def load_hf_causal_lm(folder: Path, dtype: torch.dtype = torch.float32) -> HFCausalLM:
    """A causal LM folder -> :class:`HFCausalLM` (eval mode)."""
    cfg = hf_config(folder)
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise PretrainedError(f"{folder}: causal LMs need the [hf] extra: pip install 'modalab[hf]'") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    except (ValueError, KeyError) as e:
        raise PretrainedError(
            f"{folder}: model_type {cfg['model_type']!r} is not a causal LM transformers can load ({e})"
        ) from None
    return HFCausalLM(model).eval()
