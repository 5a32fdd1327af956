"""A checkpoint's own tokenizer: ``tokenizer.json`` through the ``tokenizers`` library.

Calling it pads and truncates to ``context_length`` exactly as transformers' fast tokenizers do
with ``padding="max_length", truncation=True`` (the same ``tokenizers`` calls), so ids match the
library's. The pad token comes from ``tokenizer_config.json`` (``pad_token``) or
``special_tokens_map.json``. A folder without ``tokenizer.json`` (e.g. a SentencePiece-only
checkpoint) falls back to ``transformers.AutoTokenizer`` when that can read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from modalab.models.pretrained.source import PretrainedError, read_json


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def special_token(folder: Path, name: str) -> str | None:
    """``name`` (e.g. ``pad_token``) from tokenizer_config.json or special_tokens_map.json."""
    for fname in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / fname
        if path.is_file():
            tok = _token_text(read_json(path, "tokenizer settings").get(name))
            if tok is not None:
                return tok
    return None


class PretrainedTokenizer:
    """list of B strings -> (B, context_length) int64 ids of the checkpoint's vocabulary."""

    def __init__(self, folder: Path, context_length: int) -> None:
        self.folder = Path(folder)
        self.context_length = context_length
        path = self.folder / "tokenizer.json"
        self._hf = None
        if path.is_file():
            from tokenizers import Tokenizer

            try:
                tok = Tokenizer.from_file(str(path))
            except Exception as e:  # the library's own parse error, with the file named
                raise PretrainedError(f"{path}: not a tokenizers file ({e})") from None
            pad = special_token(self.folder, "pad_token")
            if pad is None or tok.token_to_id(pad) is None:
                raise PretrainedError(
                    f"{self.folder}: tokenizer_config.json names no pad_token in the vocabulary "
                    f"(got {pad!r}); texts of different lengths cannot be batched"
                )
            tok.enable_truncation(max_length=context_length)
            tok.enable_padding(length=context_length, pad_id=tok.token_to_id(pad), pad_token=pad)
            self._tok = tok
            self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
            self.pad_id = tok.token_to_id(pad)
            return
        try:
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(str(self.folder))
        except Exception as e:
            raise PretrainedError(
                f"{self.folder}: no tokenizer.json, and transformers could not read a tokenizer there ({e})"
            ) from None
        self.vocab_size = len(self._hf)
        self.pad_id = self._hf.pad_token_id

    def __call__(self, texts: list[str]) -> Tensor:
        """(B, context_length) int64."""
        if self._hf is not None:
            enc = self._hf(list(texts), padding="max_length", truncation=True, max_length=self.context_length)
            return torch.tensor(enc["input_ids"], dtype=torch.long)
        return torch.tensor([e.ids for e in self._tok.encode_batch(list(texts))], dtype=torch.long)

    def encode(self, text: str) -> list[int]:
        """Ids of one text (special tokens included, truncated, trailing padding removed)."""
        ids = self([text])[0].tolist()
        while ids and ids[-1] == self.pad_id and self.pad_id is not None:
            ids.pop()
        return ids

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "pretrained", "path": str(self.folder), "context_length": self.context_length}
