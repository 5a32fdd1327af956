"""Tiny pretrained folders made the way recipes/pretrain/ makes them (random weights, no training)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from modalab.data.sources.digits import caption
from modalab.models.pretrained.export_decoder import export_decoder_hf
from modalab.models.pretrained.export_vit import export_vit_hf
from modalab.models.pretrained.word_tokenizer_hf import save_word_tokenizer
from modalab.text.decoder import TextDecoder
from modalab.text.tokenizer import WordTokenizer
from modalab.vision.clip_vit import PretrainedViT

DIGIT_TEXTS = [caption(y, t) for y in range(10) for t in range(6)]


def tiny_vit(image_size: int = 16) -> PretrainedViT:
    torch.manual_seed(0)
    return PretrainedViT(image_size=image_size, patch_size=4, in_channels=3, width=32, depth=2, heads=4,
                         mlp_hidden=64, act=F.gelu, norm_eps=1e-12, class_token=True, patch_bias=True,
                         pre_norm=False)


def vit_folder(out: Path) -> Path:
    return export_vit_hf(tiny_vit(), out, [0.5] * 3, [0.5] * 3)


def lm_folder(out: Path, context_length: int = 12) -> tuple[Path, TextDecoder, WordTokenizer]:
    tok = WordTokenizer.build(DIGIT_TEXTS, context_length)
    torch.manual_seed(1)
    dec = TextDecoder(tok.vocab_size, dim=32, depth=2, heads=4, max_len=40)
    for p in dec.parameters():  # non-trivial biases and norms, so a wrong mapping shows
        p.data.add_(0.02 * torch.randn_like(p))
    out = export_decoder_hf(dec, out)
    save_word_tokenizer(tok, out)
    return out, dec, tok
