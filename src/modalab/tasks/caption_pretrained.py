"""Pretrained towers for the caption task: ``model.encoder.pretrained`` and ``model.decoder.pretrained``.

- ``model.encoder.pretrained: hf:DIR``: a CLIP / SigLIP / ``ViTModel`` image tower (the loader of
  ``model.vision.pretrained``), wrapped so it takes modalab images (grey or RGB, any size) with the
  checkpoint's own size and mean/std; the captioner reads all its tokens (class token first).
- ``model.decoder.pretrained: hf:DIR``: a causal LM folder (``AutoModelForCausalLM``) with its
  ``tokenizer.json``; the caption task then tokenizes and decodes with that tokenizer
  (``models/pretrained/word_tokenizer_hf.py``: pad/bos/eos must be modalab's 0/1/2, as in the
  folders ``recipes/pretrain/caption_lm.yaml`` exports).
"""

from __future__ import annotations

from modalab.models.captioner import VitTokens
from modalab.models.pretrained.causal_lm import HFDecoder, load_hf_decoder
from modalab.models.pretrained.load import adapt_pixels, load_image_tower, preprocessor_settings
from modalab.models.pretrained.source import PretrainedError, parse_spec
from modalab.models.pretrained.word_tokenizer_hf import CaptionTokenizer


def pretrained_image_encoder(spec: str) -> VitTokens:
    """``hf:DIR`` -> images (B, C, S, S) in [-1, 1] -> tokens (B, 1 + N, width)."""
    tower, width = load_image_tower(spec)
    if not hasattr(tower, "forward_tokens"):
        raise PretrainedError(f"{spec}: this image tower gives no token sequence for the captioner")
    return VitTokens(adapt_pixels(tower, preprocessor_settings(spec)).train(), width)


def pretrained_decoder(spec: str, context_length: int) -> tuple[HFDecoder, CaptionTokenizer]:
    """``hf:DIR`` -> (the wrapped causal LM, its tokenizer); their vocabulary sizes must agree."""
    s = parse_spec(spec, ("hf",))
    tok = CaptionTokenizer(s.path, context_length)
    lm = load_hf_decoder(s.path)
    if tok.vocab_size > lm.vocab_size:
        raise PretrainedError(
            f"{s.path}: tokenizer.json has {tok.vocab_size} ids but the LM's config.json vocab_size is {lm.vocab_size}"
        )
    return lm, tok

