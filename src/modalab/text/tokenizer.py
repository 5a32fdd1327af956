"""Tokenizers that need no download.

- ``WordTokenizer``: lower-cased words and digits, a vocabulary built from the captions and prompts
  the run will see; unknown words map to ``<unk>``. Small, fast, and enough for caption templates.
- ``ByteTokenizer``: UTF-8 bytes (256 symbols); no vocabulary, handles any text.

Both reserve id 0 for padding, 1 for ``<bos>``, 2 for ``<eos>``; ``__call__`` returns a (B, L)
int64 tensor padded with 0 and truncated to ``context_length`` (keeping ``<eos>``).
Both serialise to a small JSON dict (``to_dict`` / ``tokenizer_from_dict``).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import torch
from torch import Tensor

PAD, BOS, EOS, UNK = 0, 1, 2, 3
_WORD = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    """Lower-case word / digit / punctuation split."""
    return _WORD.findall(text.lower())


class _Base:
    context_length: int
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def __call__(self, texts: list[str]) -> Tensor:
        """list of B strings -> (B, context_length) int64, 0-padded."""
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [BOS, *self.encode(t), EOS]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length - 1] + [EOS]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


class WordTokenizer(_Base):
    """Word-level tokenizer over a fixed vocabulary (ids 0-3 reserved)."""

    specials = ("<pad>", "<bos>", "<eos>", "<unk>")

    def __init__(self, vocab: list[str], context_length: int = 16) -> None:
        if list(vocab[:4]) != list(self.specials):
            vocab = [*self.specials, *[w for w in vocab if w not in self.specials]]
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.context_length = context_length
        self.vocab_size = len(self.vocab)

    @classmethod
    def build(cls, texts: Iterable[str], context_length: int = 16) -> "WordTokenizer":
        """Vocabulary = every word in ``texts``, sorted for determinism."""
        seen = sorted({w for t in texts for w in words(t)})
        return cls([*cls.specials, *seen], context_length)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, UNK) for w in words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if i > EOS)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "word", "vocab": self.vocab, "context_length": self.context_length}


class ByteTokenizer(_Base):
    """UTF-8 bytes shifted by 4 (ids 0-3 reserved): vocab size 260."""

    def __init__(self, context_length: int = 64) -> None:
        self.context_length = context_length
        self.vocab_size = 260

    def encode(self, text: str) -> list[int]:
        return [b + 4 for b in text.encode("utf-8")]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i - 4 for i in ids if i >= 4).decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "byte", "context_length": self.context_length}


Tokenizer = WordTokenizer | ByteTokenizer


def build_tokenizer(kind: str, texts: Iterable[str], context_length: int) -> Tokenizer:
    if kind == "word":
        return WordTokenizer.build(texts, context_length)
    if kind == "byte":
        return ByteTokenizer(context_length)
    raise ValueError(f"unknown tokenizer '{kind}'; expected 'word' or 'byte'")


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    if d.get("kind") == "word":
        return WordTokenizer(d["vocab"], d["context_length"])
    if d.get("kind") == "byte":
        return ByteTokenizer(d["context_length"])
    raise ValueError(f"unknown tokenizer record {d!r}; expected kind 'word' or 'byte'")
