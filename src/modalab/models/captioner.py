"""Encoder -> connector -> language decoder (chapter 5.2.1: frozen vision encoder -> Perceiver
Resampler -> LLM decoder, adapted with a visual prefix, adapters or LoRA).

``Captioner`` takes its three parts as modules:

- ``encoder``: images (B, C, H, W) -> media tokens (B, N, W_enc) (e.g. ``VitTokens`` around the
  digits CLIP image tower, whose ``forward_tokens`` gives the class token and the patch tokens);
- ``connector``: any registered connector, ``(media, mask) -> (tokens (B, M, D), mask)``;
- ``decoder``: ``text.decoder.TextDecoder`` of width D.

Two ways in: ``conditioning="prefix"`` prepends the connector's tokens to the text (LLaVA,
BLIP-2); ``"cross_attention"`` inserts Flamingo gated cross-attention layers (gates at 0, so the
decoder starts exactly as it was) and keeps the text sequence as it is. Bottleneck adapters and
LoRA on the decoder's attention projections are added by the builder when the recipe asks.

Parameter names start with ``encoder.``, ``connector.`` and ``decoder.`` (cross-attention layers:
``decoder.blocks.<i>.cross.``, adapters ``decoder.blocks.<i>.adapter.``, LoRA ``...lora_a/lora_b``),
which is what ``optim.param_groups`` and ``train.stages`` match.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from modalab import registry
from modalab.config import NamedBase, Section
from modalab.fusion.cross_attention import GatedCrossAttentionBlock
from modalab.fusion.lora import apply_lora
from modalab.models.two_tower import TextTowerConfig, VisionTowerConfig
from modalab.registry import register
from modalab.text.decoder import BottleneckAdapter, TextDecoder
from modalab.text.generate import beam_search, greedy


class VitTokens(nn.Module):
    """(B, C, H, W) -> (B, 1 + N, width): all tokens of a ViT (class token first)."""

    def __init__(self, vit: nn.Module, width: int | None = None) -> None:
        super().__init__()
        self.vit = vit
        self.width: int = width if width is not None else vit.cls_token.shape[-1]

    def forward(self, images: Tensor) -> Tensor:
        return self.vit.forward_tokens(images)


class Captioner(nn.Module):
    """images (B, C, H, W) + caption tokens (B, T) -> next-token logits (B, T, V).

    Args:
        encoder: images -> (B, N, W_enc).
        connector: (B, N, W_enc), mask -> (B, M, D), mask.
        decoder: causal LM of width D; for ``cross_attention`` it must already hold cross layers.
        conditioning: ``prefix`` or ``cross_attention``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        connector: nn.Module,
        decoder: TextDecoder,
        conditioning: Literal["prefix", "cross_attention"] = "prefix",
    ) -> None:
        super().__init__()
        if conditioning not in ("prefix", "cross_attention"):
            raise ValueError(
                f"models/captioner.py: conditioning must be 'prefix' or 'cross_attention', got {conditioning!r}"
            )
        self.encoder, self.connector, self.decoder = encoder, connector, decoder
        self.conditioning = conditioning

    def media(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, C, H, W) -> connector tokens (B, M, D) and their mask (B, M) | None."""
        return self.connector(self.encoder(images), None)

    def _condition(self, tokens: Tensor, mask: Tensor | None) -> dict[str, Any]:
        if self.conditioning == "prefix":
            return {"prefix": tokens, "prefix_mask": mask}
        media_mask = None if mask is None else mask[:, None]  # (B, 1, M)
        return {"cross_inputs": {"media": tokens[:, None], "media_mask": media_mask}}  # (B, 1, M, D)

    def forward(self, images: Tensor, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """images (B, C, H, W), tokens (B, T), attention_mask (B, T) True = real -> (B, T, V)."""
        media, mask = self.media(images)
        return self.decoder(tokens, attention_mask=attention_mask, **self._condition(media, mask))

    @torch.no_grad()
    def generate(
        self,
        images: Tensor,
        prompt: Tensor,
        max_new_tokens: int,
        eos_id: int | None = None,
        pad_id: int = 0,
        beam_size: int = 1,
        length_penalty: float = 0.0,
    ) -> Tensor:
        """Greedy (``beam_size=1``) or beam-search captions: prompt (B, T0) -> (B, max_new_tokens)."""
        media, mask = self.media(images)
        cond = self._condition(media, mask)
        if beam_size == 1:
            return greedy(self.decoder, prompt, max_new_tokens, eos_id=eos_id, pad_id=pad_id, **cond)
        out, _ = beam_search(
            self.decoder, prompt, max_new_tokens, beam_size=beam_size, eos_id=eos_id, pad_id=pad_id,
            length_penalty=length_penalty, **cond,
        )
        return out


# ----------------------------------------------------------------------------------- builder


class EncoderConfig(Section):
    """Where the image encoder comes from: a contrastive run directory, or trained (and cached)."""

    checkpoint: str | None = Field(
        None, description="RUN_DIR of a two_tower run (config.yaml + checkpoints/step_*/model.safetensors)"
    )
    pretrained: str | None = Field(
        None, description="hf:DIR image tower (CLIP / SigLIP / ViTModel folder) instead of a run directory"
    )
    cache_dir: str | None = Field(None, description="where a pre-trained encoder is cached; default <out_dir>/cache")
    pretrain_steps: int = Field(300, gt=0, description="contrastive steps when no checkpoint is given")
    pretrain_batch_size: int = Field(128, gt=0)
    pretrain_lr: float = Field(2e-3, gt=0)
    embed_dim: int = Field(64, gt=0)
    vision: VisionTowerConfig = Field(default_factory=VisionTowerConfig)
    text: TextTowerConfig = Field(default_factory=lambda: TextTowerConfig(context_length=12, width=64, depth=1))


class DecoderConfig(Section):
    pretrained: str | None = Field(
        None, description="hf:DIR causal LM (AutoModelForCausalLM) with its tokenizer.json; shape keys unused"
    )
    dim: int = Field(128, gt=0)
    depth: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)
    max_len: int = Field(64, gt=0)
    mlp_ratio: int = Field(4, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    context_length: int = Field(12, gt=2, description="caption tokens incl. <bos>/<eos>")
    pretrain_steps: int = Field(200, ge=0, description="language-model steps on the captions alone; 0 = none")
    pretrain_lr: float = Field(3e-3, gt=0)
    pretrain_batch_size: int = Field(64, gt=0)


class CrossAttentionConfig(Section):
    every: int = Field(1, gt=0, description="a gated cross-attention layer before every n-th block")
    heads: int = Field(4, gt=0)
    head_dim: int = Field(32, gt=0)


class LoraConfig(Section):
    rank: int = Field(4, gt=0)
    alpha: float = Field(8.0, gt=0)
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)


class CaptionerConfig(NamedBase):
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    connector: dict[str, Any] = Field(
        default_factory=lambda: {"name": "perceiver_resampler", "dim": 128, "depth": 1, "heads": 4,
                                 "head_dim": 32, "num_latents": 8}
    )
    decoder: DecoderConfig = Field(default_factory=DecoderConfig)
    conditioning: Literal["prefix", "cross_attention"] = "prefix"
    cross_attention: CrossAttentionConfig = Field(default_factory=CrossAttentionConfig)
    adapter_bottleneck: int | None = Field(None, gt=0, description="bottleneck adapters after each block")
    lora: LoraConfig | None = None

    @field_validator("connector")
    @classmethod
    def _check_connector(cls, v: dict[str, Any]) -> dict[str, Any]:
        name = v.get("name")
        if not isinstance(name, str):
            raise ValueError(
                f"model.connector needs a 'name'; one of: {', '.join(registry.names('connector'))}"
            )
        entry = registry.get("connector", name)
        rest = {k: x for k, x in v.items() if k != "name"}
        if entry.schema is not None:
            rest = entry.schema.model_validate(rest).model_dump()
        return {"name": name, **rest}


@register("model", "captioner", schema=CaptionerConfig)
def build_captioner(
    cfg: CaptionerConfig, *, encoder: nn.Module, encoder_dim: int, vocab_size: int,
    decoder: TextDecoder | None = None,
) -> Captioner:
    """Image encoder -> connector -> causal text decoder (prefix or gated cross-attention; adapters, LoRA)."""
    d = cfg.decoder
    if decoder is None:
        decoder = TextDecoder(vocab_size, d.dim, d.depth, d.heads, d.max_len, d.mlp_ratio, d.dropout)
    conn_args = {k: v for k, v in cfg.connector.items() if k != "name"}
    if "vocab_size" in inspect.signature(registry.get("connector", cfg.connector["name"]).builder).parameters:
        conn_args["vocab_size"] = vocab_size  # connectors that read text (BLIP-2's Q-Former)
    connector = registry.build("connector", cfg.connector["name"], in_dim=encoder_dim, out_dim=decoder.dim, **conn_args)
    if not isinstance(decoder, TextDecoder):  # a wrapped Hugging Face causal LM (models/pretrained)
        return _pretrained_lm_captioner(cfg, encoder, connector, decoder)
    if cfg.conditioning == "cross_attention":
        x = cfg.cross_attention
        decoder.insert_cross_layers(
            lambda i: GatedCrossAttentionBlock(d.dim, d.dim, x.heads, x.head_dim) if i % x.every == 0 else None
        )
    if cfg.adapter_bottleneck is not None:
        decoder.insert_adapters(lambda i: BottleneckAdapter(d.dim, cfg.adapter_bottleneck))
    if cfg.lora is not None:
        apply_lora(decoder, cfg.lora.targets, cfg.lora.rank, cfg.lora.alpha)
    return Captioner(encoder, connector, decoder, cfg.conditioning)


def _pretrained_lm_captioner(cfg: CaptionerConfig, encoder: nn.Module, connector: nn.Module,
                             decoder: nn.Module) -> Captioner:
    """Prefix conditioning only; LoRA through peft (``model.lora.targets``: the LM's module names,
    e.g. ``[c_attn]`` for GPT-2, ``[q_proj, v_proj]`` for Llama / Qwen2)."""
    if cfg.conditioning != "prefix" or cfg.adapter_bottleneck is not None:
        raise ValueError(
            "model.decoder.pretrained: a pretrained causal LM takes a visual prefix only; remove "
            "model.adapter_bottleneck and set model.conditioning: prefix"
        )
    if cfg.lora is not None:
        from modalab.models.pretrained.peft_lora import apply_lora as peft_lora

        peft_lora(decoder, cfg.lora.targets, cfg.lora.rank, cfg.lora.alpha)  # type: ignore[arg-type]
    return Captioner(encoder, connector, decoder, "prefix")  # type: ignore[arg-type]
