"""Audio -> LLM (chapter 5.3.1, end to end): waveform -> Whisper-style encoder -> adapter -> causal LM.

    waveform (B, samples) -> LogMel (B, n_mels, T) at 100 Hz -> WhisperStyleEncoder (B, T/2, D_enc)
    at 50 Hz -> SpeechAdapter (downsample by k: strided / pooled / learned conv, project to D_lm,
    optional language embedding) (B, T/(2k), D_lm) at 50/k Hz -> TextDecoder with the audio tokens
    as a prefix -> next-token logits (B, L, V).

Parameter names start with ``frontend.``, ``encoder.``, ``adapter.`` and ``decoder.`` (LoRA:
``decoder.blocks.<i>...lora_a / lora_b``), which is what ``train.stages`` patterns match: e.g.
stage 1 ``["encoder.*", "adapter.*"]`` with the decoder frozen, stage 2 ``["adapter.*", "*lora*"]``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from modalab.audio.adapter import SpeechAdapter, build_adapter
from modalab.audio.frontend import LogMel
from modalab.audio.whisper_encoder import WhisperStyleEncoder
from modalab.config import NamedBase, Section
from modalab.fusion.lora import apply_lora
from modalab.models.captioner import DecoderConfig, LoraConfig
from modalab.registry import register
from modalab.text.decoder import TextDecoder
from modalab.text.generate import greedy


class AudioLM(nn.Module):
    """waveform (B, samples) + tokens (B, L) -> logits (B, L, V) of the token positions."""

    def __init__(self, frontend: nn.Module, encoder: nn.Module, adapter: SpeechAdapter, decoder: TextDecoder) -> None:
        super().__init__()
        self.frontend, self.encoder, self.adapter, self.decoder = frontend, encoder, adapter, decoder

    def audio_tokens(self, wave: Tensor, lang_ids: Tensor | None = None) -> Tensor:
        """(B, samples) -> (B, T', D_lm) at ``adapter.tokens_per_second`` Hz."""
        return self.adapter(self.encoder(self.frontend(wave)), lang_ids)

    def forward(self, wave: Tensor, tokens: Tensor, attention_mask: Tensor | None = None,
                lang_ids: Tensor | None = None) -> Tensor:
        return self.decoder(tokens, prefix=self.audio_tokens(wave, lang_ids), attention_mask=attention_mask)

    @torch.no_grad()
    def generate(self, wave: Tensor, prompt: Tensor, max_new_tokens: int, eos_id: int | None = None,
                 pad_id: int = 0, lang_ids: Tensor | None = None) -> Tensor:
        """Greedy decoding: prompt (B, T0) -> (B, <= max_new_tokens)."""
        return greedy(self.decoder, prompt, max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                      prefix=self.audio_tokens(wave, lang_ids))


class AudioEncoderConfig(Section):
    n_mels: int = Field(64, gt=0)
    dim: int = Field(64, gt=0)
    depth: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)
    max_frames: int = Field(3000, gt=0, description="longest log-mel input (100 frames per second)")
    spec_augment: Literal["none", "LB", "LD", "SM", "SS"] = "none"


class AudioAdapterConfig(Section):
    kind: Literal["stride", "avg_pool", "conv", "window_query"] = "avg_pool"
    k: int = Field(5, gt=0, description="downsampling factor: 50 Hz / 5 = 10 audio tokens per second")
    projector: Literal["linear", "mlp"] = "mlp"
    n_langs: int = Field(0, ge=0, description="language-embedding table size (0 = none)")


class AudioLMConfig(NamedBase):
    encoder: AudioEncoderConfig = Field(default_factory=AudioEncoderConfig)
    adapter: AudioAdapterConfig = Field(default_factory=AudioAdapterConfig)
    decoder: DecoderConfig = Field(default_factory=DecoderConfig)
    lora: LoraConfig | None = None


@register("model", "audio_lm", schema=AudioLMConfig)
def build_audio_lm(cfg: AudioLMConfig, *, vocab_size: int, decoder: TextDecoder | None = None,
                   seed: int | None = None) -> AudioLM:
    """Log-mel -> Whisper-style encoder -> adapter -> causal decoder (LoRA on it when ``cfg.lora``)."""
    e, a, d = cfg.encoder, cfg.adapter, cfg.decoder
    frontend = LogMel(e.n_mels, None if e.spec_augment == "none" else e.spec_augment, seed=seed)
    encoder = WhisperStyleEncoder(e.n_mels, e.dim, e.depth, e.heads, e.max_frames)
    adapter = build_adapter(e.dim, d.dim, a.kind, a.k, 50.0, a.projector, a.n_langs)
    if decoder is None:
        decoder = TextDecoder(vocab_size, d.dim, d.depth, d.heads, d.max_len, d.mlp_ratio, d.dropout)
    if cfg.lora is not None:
        apply_lora(decoder, cfg.lora.targets, cfg.lora.rank, cfg.lora.alpha)
    return AudioLM(frontend, encoder, adapter, decoder)
