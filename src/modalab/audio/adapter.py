"""Speech encoder -> LLM adapter (chapter 5.3.1): downsample, project, add language embeddings.

Encoder features (B, T, D_enc) at ``in_rate`` frames per second (Whisper: 50) are shortened by a
downsampler and projected to the LM width. Downsamplers (factor k):

- ``stride``: keep every k-th frame (the chapter's ``tokens[::5]``);
- ``avg_pool``: AvgPool1d(k) (Qwen-Audio: k = 2 -> 25 tokens/s);
- ``conv``: Conv1d(D, D, k, stride k), a learned pooling;
- ``window_query``: one learned query per window of k frames cross-attending to that window
  (SALMONN's window Q-Former: 1 query per 0.33 s).

A language embedding is added per token: one language per utterance (``lang_ids`` (B,)) or, for
code-switching, per segment (``segments_to_token_langs`` turns (start_s, end_s, lang) segments into
per-token ids (B, T_out)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.layers import torch_mha_attention


class StrideDown(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, ceil(T/k), D)
        return x[:, :: self.k]


class AvgPoolDown(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, ceil(T/k), D)
        return F.avg_pool1d(x.transpose(1, 2), self.k, self.k, ceil_mode=True).transpose(1, 2)


class ConvDown(nn.Module):
    def __init__(self, dim: int, k: int):
        super().__init__()
        self.k = k
        self.conv = nn.Conv1d(dim, dim, k, stride=k)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, ceil(T/k), D)
        pad = (-x.shape[1]) % self.k
        return self.conv(F.pad(x.transpose(1, 2), (0, pad))).transpose(1, 2)


class WindowQueryDown(nn.Module):
    """One learned query per window of k frames; attention restricted to its window."""

    def __init__(self, dim: int, k: int, heads: int = 4):
        super().__init__()
        self.k = k
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.attn = torch_mha_attention(dim, heads)  # loads nn.MultiheadAttention checkpoints

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, ceil(T/k), D)
        B, T, D = x.shape
        pad = (-T) % self.k
        xp = F.pad(x, (0, 0, 0, pad))
        n_win = xp.shape[1] // self.k
        win = self.norm(xp.reshape(B * n_win, self.k, D))  # (B*W, k, D)
        real = torch.arange(xp.shape[1], device=x.device) < T  # (W*k,) False on the padding
        real = real.view(1, n_win, self.k).expand(B, -1, -1).reshape(B * n_win, self.k)  # (B*W, k)
        q = self.query.expand(B * n_win, 1, D)  # (B*W, 1, D)
        out = self.attn(q, win, key_mask=real)  # (B*W, 1, D)
        return out.view(B, n_win, D)  # (B, W, D)


def make_downsampler(kind: str, k: int, dim: int) -> nn.Module:
    """Build a downsampler by name: 'stride', 'avg_pool', 'conv' or 'window_query'."""
    if k < 1:
        raise ValueError(f"downsampling factor k={k} must be >= 1")
    if kind == "stride":
        return StrideDown(k)
    if kind == "avg_pool":
        return AvgPoolDown(k)
    if kind == "conv":
        return ConvDown(dim, k)
    if kind == "window_query":
        return WindowQueryDown(dim, k)
    raise ValueError(f"unknown downsampler {kind!r}; expected stride, avg_pool, conv or window_query")


class SpeechAdapter(nn.Module):
    """(B, T, D_enc) at ``in_rate`` Hz -> (B, ceil(T/k), D_lm) at ``tokens_per_second`` Hz.

    Args:
        downsampler: module (B, T, D_enc) -> (B, T', D_enc) shortening time by ``k``.
        projector: module D_enc -> D_lm (Linear, or an MLP).
        k: the downsampler's factor (for the rate bookkeeping).
        in_rate: encoder frames per second.
        n_langs: size of the language-embedding table (0 = none).
    """

    def __init__(self, downsampler: nn.Module, projector: nn.Module, k: int, in_rate: float = 50.0,
                 n_langs: int = 0, lm_dim: int | None = None):
        super().__init__()
        self.down, self.proj, self.k, self.in_rate = downsampler, projector, k, in_rate
        if n_langs and lm_dim is None:
            raise ValueError("SpeechAdapter: lm_dim is required when n_langs > 0")
        self.lang = nn.Embedding(n_langs, lm_dim) if n_langs else None
        if self.lang is not None:
            nn.init.normal_(self.lang.weight, std=0.02)

    @property
    def tokens_per_second(self) -> float:
        return self.in_rate / self.k

    def forward(self, feats: Tensor, lang_ids: Tensor | None = None) -> Tensor:
        x = self.proj(self.down(feats))  # (B, T', D_lm)
        if lang_ids is not None:
            if self.lang is None:
                raise ValueError("lang_ids given but the adapter has no language embeddings (n_langs=0)")
            emb = self.lang(lang_ids)  # (B, D) or (B, T', D)
            if emb.dim() == 2:
                emb = emb.unsqueeze(1)
            elif emb.shape[1] != x.shape[1]:
                raise ValueError(f"per-token lang_ids cover {emb.shape[1]} tokens, adapter made {x.shape[1]}")
            x = x + emb
        return x


def build_adapter(enc_dim: int, lm_dim: int, kind: str = "stride", k: int = 4, in_rate: float = 50.0,
                  projector: str = "linear", n_langs: int = 0) -> SpeechAdapter:
    """Convenience assembly: downsampler by name + ``linear`` or ``mlp`` (2-layer GELU) projector."""
    if projector == "linear":
        proj: nn.Module = nn.Linear(enc_dim, lm_dim)
    elif projector == "mlp":
        proj = nn.Sequential(nn.Linear(enc_dim, lm_dim), nn.GELU(), nn.Linear(lm_dim, lm_dim))
    else:
        raise ValueError(f"projector={projector!r}; expected 'linear' or 'mlp'")
    return SpeechAdapter(make_downsampler(kind, k, enc_dim), proj, k, in_rate, n_langs, lm_dim)


def segments_to_token_langs(segments: list[list[tuple[float, float, int]]], n_tokens: int,
                            tokens_per_second: float, default: int = 0) -> Tensor:
    """Code-switching: per-utterance lists of (start_s, end_s, lang_id) -> token lang ids (B, n_tokens).

    Token i covers [i / rate, (i + 1) / rate); it takes the language of the segment containing its
    centre (``default`` where no segment does).
    """
    out = torch.full((len(segments), n_tokens), default, dtype=torch.long)
    centres = (torch.arange(n_tokens, dtype=torch.float64) + 0.5) / tokens_per_second
    for b, segs in enumerate(segments):
        for start, end, lang in segs:
            if end < start:
                raise ValueError(f"segment ({start}, {end}, {lang}) of utterance {b} ends before it starts")
            out[b, (centres >= start) & (centres < end)] = int(lang)
    return out


