"""Greedy and beam-search decoding for ``text.decoder.TextDecoder``.

Both take the same conditioning as the decoder (``prefix``/``prefix_mask`` for a visual prefix,
``cross_inputs`` for cross-attention layers) and a left- or right-padded prompt with its mask.
With ``use_cache=True`` the prompt runs once and each step feeds one token through the KV cache;
``use_cache=False`` recomputes the whole sequence every step (the reference the cache is tested
against). If ``cross_inputs`` holds a ``media_index`` (B, P + T) for the prompt, generated tokens
inherit the prompt's last entry (they follow the latest media).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from modalab.text.decoder import TextDecoder


def _cross_at(
    cross_inputs: Mapping[str, Any] | None, extra: int, step_only: bool
) -> Mapping[str, Any] | None:
    """cross_inputs for a sequence ``extra`` tokens longer than the prompt (or the last step only)."""
    if cross_inputs is None or cross_inputs.get("media_index") is None:
        return cross_inputs
    idx = cross_inputs["media_index"]  # (B, L0)
    last = idx[:, -1:]  # (B, 1)
    if step_only:
        new_idx = last
    else:
        new_idx = torch.cat([idx, last.expand(-1, extra)], dim=1)  # (B, L0 + extra)
    return {**cross_inputs, "media_index": new_idx}


def _check(max_new_tokens: int, beam_size: int) -> None:
    if max_new_tokens < 1 or beam_size < 1:
        raise ValueError(
            f"text/generate.py: max_new_tokens and beam_size must be >= 1, got "
            f"{max_new_tokens} and {beam_size}"
        )


def _repeat(x: Any, k: int) -> Any:
    return x.repeat_interleave(k, dim=0) if isinstance(x, Tensor) else x


class _Stepper:
    """Feeds a growing sequence to the decoder, with or without a KV cache; returns last logits."""

    def __init__(self, decoder: TextDecoder, prompt: Tensor, prompt_mask: Tensor | None,
                 prefix: Tensor | None, prefix_mask: Tensor | None,
                 cross_inputs: Mapping[str, Any] | None, use_cache: bool) -> None:
        self.dec, self.prompt, self.prompt_mask = decoder, prompt, prompt_mask
        self.prefix, self.prefix_mask, self.cross = prefix, prefix_mask, cross_inputs
        self.cache = decoder.new_cache() if use_cache else None
        self.generated: list[Tensor] = []

    def first(self) -> Tensor:
        logits = self.dec(self.prompt, self.prefix, self.prefix_mask, self.prompt_mask,
                          self.cross, self.cache)
        return logits[:, -1]  # (B, V)

    def step(self, token: Tensor) -> Tensor:
        """token (B,) appended -> logits (B, V) for the next one."""
        self.generated.append(token)
        if self.cache is not None:
            logits = self.dec(token[:, None], cross_inputs=_cross_at(self.cross, 1, True), cache=self.cache)
            return logits[:, -1]
        tokens = torch.cat([self.prompt, torch.stack(self.generated, 1)], dim=1)  # (B, T + k)
        mask = None
        if self.prompt_mask is not None:
            ones = self.prompt_mask.new_ones(tokens.shape[0], len(self.generated))
            mask = torch.cat([self.prompt_mask, ones], dim=1)
        cross = _cross_at(self.cross, len(self.generated), False)
        return self.dec(tokens, self.prefix, self.prefix_mask, mask, cross)[:, -1]

    def reorder(self, index: Tensor) -> None:
        # beams of one row share prompt mask, prefix and media, so only tokens and caches move
        self.generated = [g.index_select(0, index) for g in self.generated]
        self.prompt = self.prompt.index_select(0, index)
        if self.cache is not None:
            self.cache.reorder(index)


@torch.no_grad()
def greedy(
    decoder: TextDecoder,
    prompt: Tensor,
    max_new_tokens: int,
    eos_id: int | None = None,
    pad_id: int = 0,
    prompt_mask: Tensor | None = None,
    prefix: Tensor | None = None,
    prefix_mask: Tensor | None = None,
    cross_inputs: Mapping[str, Any] | None = None,
    use_cache: bool = True,
) -> Tensor:
    """prompt (B, T) -> generated tokens (B, max_new_tokens); after ``eos_id``, ``pad_id``."""
    _check(max_new_tokens, 1)
    st = _Stepper(decoder, prompt, prompt_mask, prefix, prefix_mask, cross_inputs, use_cache)
    logits = st.first()
    done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    out = []
    for i in range(max_new_tokens):
        tok = logits.argmax(-1)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        out.append(tok)
        if eos_id is not None:
            done = done | (tok == eos_id)
            if bool(done.all()):
                break
        if i + 1 < max_new_tokens:
            logits = st.step(tok)
    res = torch.stack(out, dim=1)
    if res.shape[1] < max_new_tokens:
        pad = res.new_full((res.shape[0], max_new_tokens - res.shape[1]), pad_id)
        res = torch.cat([res, pad], dim=1)
    return res


@torch.no_grad()
def beam_search(
    decoder: TextDecoder,
    prompt: Tensor,
    max_new_tokens: int,
    beam_size: int = 4,
    eos_id: int | None = None,
    pad_id: int = 0,
    length_penalty: float = 0.0,
    prompt_mask: Tensor | None = None,
    prefix: Tensor | None = None,
    prefix_mask: Tensor | None = None,
    cross_inputs: Mapping[str, Any] | None = None,
    use_cache: bool = True,
) -> tuple[Tensor, Tensor]:
    """Beam search. Returns the best sequence per row (B, max_new_tokens) (``pad_id`` after
    ``eos_id``) and its score (B,): summed log-probability / length ** ``length_penalty``."""
    _check(max_new_tokens, beam_size)
    b, k = prompt.shape[0], beam_size
    rep = lambda x: _repeat(x, k)  # noqa: E731
    cross = None if cross_inputs is None else {n: rep(v) for n, v in cross_inputs.items()}
    st = _Stepper(decoder, rep(prompt), rep(prompt_mask), rep(prefix), rep(prefix_mask), cross, use_cache)
    logp = torch.log_softmax(st.first().double(), dim=-1)  # (B*K, V)
    v = logp.shape[-1]
    scores = torch.full((b, k), float("-inf"), dtype=torch.float64, device=prompt.device)
    scores[:, 0] = 0.0
    scores = scores.reshape(b * k)
    done = torch.zeros(b * k, dtype=torch.bool, device=prompt.device)
    lengths = torch.zeros(b * k, dtype=torch.long, device=prompt.device)
    seqs = prompt.new_zeros(b * k, 0)
    base = (torch.arange(b, device=prompt.device) * k)[:, None]  # (B, 1)
    for i in range(max_new_tokens):
        if eos_id is not None:  # a finished beam continues with pad at no cost
            frozen = torch.full_like(logp, float("-inf"))
            frozen[:, pad_id] = 0.0
            logp = torch.where(done[:, None], frozen, logp)
        cand = (scores[:, None] + logp).reshape(b, k * v)  # (B, K*V)
        top, flat = cand.topk(k, dim=-1)  # (B, K)
        src = (base + flat // v).reshape(-1)  # (B*K,) beam each candidate extends
        tok = (flat % v).reshape(-1)
        scores = top.reshape(-1)
        done, lengths = done.index_select(0, src), lengths.index_select(0, src)
        lengths = lengths + (~done).long()
        seqs = torch.cat([seqs.index_select(0, src), tok[:, None]], dim=1)
        if eos_id is not None:
            done = done | (tok == eos_id)
            if bool(done.all()):
                break
        if i + 1 < max_new_tokens:
            st.reorder(src)
            logp = torch.log_softmax(st.step(tok).double(), dim=-1)
    final = scores / lengths.clamp(min=1).double() ** length_penalty
    best = final.reshape(b, k).argmax(-1)  # (B,)
    pick = base.squeeze(1) + best
    out = seqs.index_select(0, pick)
    if out.shape[1] < max_new_tokens:
        out = torch.cat([out, out.new_full((b, max_new_tokens - out.shape[1]), pad_id)], dim=1)
    return out, final.index_select(0, pick)
