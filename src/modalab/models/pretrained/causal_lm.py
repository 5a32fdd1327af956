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


class HFDecoder(HFCausalLM):
    """A wrapped causal LM called like :class:`~modalab.text.decoder.TextDecoder`, so the captioner
    and ``text/generate.py`` use it unchanged: ``forward(tokens, prefix, prefix_mask,
    attention_mask)`` -> (B, T, vocab) logits of the text positions.

    No KV cache (``new_cache`` is None: generation recomputes the sequence each step) and no
    cross-attention inputs. Positions are numbered 0..P+T-1 over prefix and text (the library's
    default), the same as ``TextDecoder`` for right-padded text after an all-real prefix.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.dim = self.hidden_size

    def new_cache(self) -> None:
        return None

    def forward(  # type: ignore[override]
        self, tokens: Tensor, prefix: Tensor | None = None, prefix_mask: Tensor | None = None,
        attention_mask: Tensor | None = None, cross_inputs: object = None, cache: object = None,
    ) -> Tensor:
        """tokens (B, T), prefix (B, P, hidden), masks (B, P) / (B, T) True = real -> (B, T, vocab)."""
        if cross_inputs is not None or cache is not None:
            raise PretrainedError("a pretrained causal LM takes no cross_inputs or KV cache here; use a prefix")
        if prefix is None:
            return super().forward(tokens, attention_mask=attention_mask)
        b, p = prefix.shape[:2]
        emb = torch.cat([prefix, self.embed(tokens).to(prefix.dtype)], dim=1)  # (B, P + T, hidden)
        mask = None
        if prefix_mask is not None or attention_mask is not None:
            pm = prefix_mask if prefix_mask is not None else tokens.new_ones(b, p, dtype=torch.bool)
            am = attention_mask if attention_mask is not None else tokens.new_ones(tokens.shape, dtype=torch.bool)
            mask = torch.cat([pm.bool(), am.bool()], dim=1).long()  # (B, P + T)
        return self.model(inputs_embeds=emb, attention_mask=mask).logits[:, p:]


def load_hf_decoder(folder: Path, dtype: torch.dtype = torch.float32) -> HFDecoder:
    """A causal LM folder -> :class:`HFDecoder` (train mode; freeze it with ``train.stages``)."""
    return HFDecoder(load_hf_causal_lm(folder, dtype).model).train()
