"""modalab's word tokenizer as a ``tokenizers`` file, and a caption tokenizer read from an LM folder.

:func:`save_word_tokenizer` writes ``tokenizer.json`` (WordLevel over the same vocabulary,
lower-casing, the same word / digit / punctuation split, ``<bos> ... <eos>`` added) with
``tokenizer_config.json`` naming the special tokens, so an exported caption LM folder carries the
tokenizer it was trained with and ``AutoTokenizer`` / ``tokenizers`` give the same ids as modalab.

:class:`CaptionTokenizer` is what the caption task needs from a pretrained LM folder: (B, L) ids with
``<bos>`` first and ``<eos>`` last, padded with the pad id; ``decode``; the pad/bos/eos ids. The
caption task's loss and decoding use modalab's ids (pad 0, bos 1, eos 2), so a folder whose special
tokens sit elsewhere is refused with the ids it has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor

from modalab.models.pretrained.source import PretrainedError
from modalab.models.pretrained.tokenizer import special_token
from modalab.text.tokenizer import BOS, EOS, PAD, WordTokenizer

WORD_PATTERN = r"[a-z]+|[0-9]|[^\sa-z0-9]"  # text/tokenizer.py's split, on lower-cased text


def word_tokenizer_json(tok: WordTokenizer) -> str:
    """The ``tokenizer.json`` text of ``tok`` (ids identical to ``tok``'s)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(tok.vocab)}, unk_token="<unk>"))
    t.normalizer = normalizers.Lowercase()
    t.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")]
    )
    t.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", BOS), ("<eos>", EOS)]
    )
    return t.to_str()


def save_word_tokenizer(tok: WordTokenizer, folder: Path) -> None:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` + ``special_tokens_map.json`` to ``folder``."""
    folder = Path(folder)
    (folder / "tokenizer.json").write_text(word_tokenizer_json(tok), encoding="utf-8")
    special = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
    cfg = {**special, "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": tok.context_length}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")


class CaptionTokenizer:
    """A pretrained LM folder's ``tokenizer.json``: list of B texts -> (B, context_length) ids."""

    def __init__(self, folder: Path, context_length: int) -> None:
        from tokenizers import Tokenizer

        self.folder, self.context_length = Path(folder), context_length
        path = self.folder / "tokenizer.json"
        if not path.is_file():
            raise PretrainedError(f"{self.folder}: missing tokenizer.json (the caption LM's tokenizer)")
        self._tok = Tokenizer.from_file(str(path))
        ids = {}
        for name, want in (("pad_token", PAD), ("bos_token", BOS), ("eos_token", EOS)):
            text = special_token(self.folder, name)
            got = None if text is None else self._tok.token_to_id(text)
            if got != want:
                ids[name] = (text, got)
        if ids:
            raise PretrainedError(
                f"{self.folder}: the caption task needs pad/bos/eos ids {PAD}/{BOS}/{EOS}; this tokenizer "
                f"has {ids} (tokenizer_config.json); export the LM with modalab's word tokenizer"
            )
        probe = self._tok.encode("a").ids
        if not probe or probe[0] != BOS or probe[-1] != EOS:
            raise PretrainedError(f"{path}: encoding does not add <bos> ... <eos> (post_processor); got {probe}")
        self._tok.enable_truncation(max_length=context_length)
        self._tok.enable_padding(length=context_length, pad_id=PAD, pad_token=self._tok.id_to_token(PAD))
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def __call__(self, texts: list[str]) -> Tensor:
        """(B, context_length) int64: <bos> words <eos> <pad>... (truncated to context_length)."""
        return torch.tensor([e.ids for e in self._tok.encode_batch(list(texts))], dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([i for i in ids if i > EOS], skip_special_tokens=True)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "pretrained_lm", "path": str(self.folder), "context_length": self.context_length}
