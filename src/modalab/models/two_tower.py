"""CLIP-style dual encoder: an image tower and a text tower projected into one embedding space.

``TwoTower`` takes its towers and projections as modules (any encoder that maps its input to
(B, width) works: a ViT, an audio encoder, ...). Embeddings are L2-normalised. The learnable
``logit_scale`` is stored in log space, initialised to ln(1/0.07) and used as ``exp()``;
``clamp_()`` keeps it in [0, ln(max_logit_scale)] and is called after every optimizer step.
An optional learnable ``logit_bias`` serves the sigmoid loss.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from modalab.config import NamedBase, Section
from modalab.registry import register
from modalab.text.encoder import TextTransformer
from modalab.vision.vit import VisionTransformer


class TwoTower(nn.Module):
    """Dual encoder.

    Args:
        image_encoder: (B, C, H, W) -> (B, Wi); text_encoder: (B, L) -> (B, Wt).
        image_proj, text_proj: (B, Wi) -> (B, E) and (B, Wt) -> (B, E).
        init_logit_scale: initial 1/tau (ln of it is stored); max_logit_scale: clamp of 1/tau.
        learn_logit_scale: if False the scale is a buffer (fixed temperature).
        init_logit_bias: None for no bias, else its initial value (SigLIP: -10).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        image_proj: nn.Module,
        text_proj: nn.Module,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        learn_logit_scale: bool = True,
        init_logit_bias: float | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = image_proj
        self.text_proj = text_proj
        scale = torch.tensor(math.log(init_logit_scale))
        if learn_logit_scale:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)
        self.logit_bias = (
            nn.Parameter(torch.tensor(float(init_logit_bias))) if init_logit_bias is not None else None
        )
        self.max_log_scale = math.log(max_logit_scale)

    def encode_image(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, E), unit norm."""
        return F.normalize(self.image_proj(self.image_encoder(images)), dim=-1)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """(B, L) -> (B, E), unit norm."""
        return F.normalize(self.text_proj(self.text_encoder(tokens)), dim=-1)

    def forward(
        self, images: Tensor, tokens: Tensor, return_tokens: bool = False
    ) -> dict[str, Tensor | None]:
        """Embeddings (B, E) of both towers, 1/tau and the bias.

        With ``return_tokens`` (FILIP-style token-level losses) also ``image_tokens`` (B, N, E),
        ``text_tokens`` (B, L, E), both unit norm, and ``text_token_mask`` (B, L); the towers must
        expose ``forward_tokens`` and ``pool_tokens`` (the ViT and the text transformer do).
        """
        out: dict[str, Tensor | None] = {
            "logit_scale": self.logit_scale.exp(),
            "logit_bias": self.logit_bias,
        }
        if not return_tokens:
            out["image_emb"] = self.encode_image(images)
            out["text_emb"] = self.encode_text(tokens)
            return out
        img_tok = self.image_encoder.forward_tokens(images)  # (B, 1 + N, Wi)
        txt_tok = self.text_encoder.forward_tokens(tokens)  # (B, L, Wt)
        valid = tokens != 0  # (B, L)
        out["image_emb"] = F.normalize(self.image_proj(self.image_encoder.pool_tokens(img_tok)), dim=-1)
        out["text_emb"] = F.normalize(self.text_proj(self.text_encoder.pool_tokens(txt_tok, valid)), dim=-1)
        out["image_tokens"] = F.normalize(self.image_proj(img_tok[:, 1:]), dim=-1)  # (B, N, E)
        out["text_tokens"] = F.normalize(self.text_proj(txt_tok), dim=-1)  # (B, L, E)
        out["text_token_mask"] = valid
        return out

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep ln(1/tau) in [0, ln(max_logit_scale)] (open_clip clamps after each step)."""
        self.logit_scale.clamp_(0.0, self.max_log_scale)

    @property
    def at_clamp(self) -> bool:
        return bool(self.logit_scale.item() >= self.max_log_scale - 1e-6)


# ----------------------------------------------------------------------------------- builder


class VisionTowerConfig(Section):
    patch_size: int = Field(4, gt=0)
    width: int = Field(128, gt=0)
    depth: int = Field(4, gt=0)
    heads: int = Field(4, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    pool: Literal["cls", "mean", "attn"] = "cls"
    pos_encoding: Literal["learned", "sincos", "factorized", "rope", "none"] = "learned"
    dynamic_size: bool = Field(False, description="accept other grids (learned positions resampled)")
    patch_dropout: float = Field(0.0, ge=0, lt=1, description="FLIP masking ratio in training")
    unmask_steps: int = Field(
        0, ge=0, description="FLIP unmasking tuning: the last N training steps run with patch_dropout 0"
    )
    pretrained: str | None = Field(
        None, description="hf:DIR image tower (CLIP/SigLIP/ViT); its checkpoint decides the architecture"
    )


class TextTowerConfig(Section):
    tokenizer: Literal["word", "byte"] = "word"
    context_length: int = Field(16, gt=2)
    width: int = Field(128, gt=0)
    depth: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    pool: Literal["mean", "eos"] = "mean"
    trim_padding: bool = Field(
        False, description="drop all-padding token columns before encoding (faster; equal up to float rounding)"
    )
    pretrained: str | None = Field(
        None, description="hf:DIR text tower (CLIP/SigLIP) with its tokenizer; decides the architecture"
    )


class DualEncoderConfig(NamedBase):
    """What every dual encoder shares: the text tower, the joint width and the temperature/bias."""

    embed_dim: int = Field(64, gt=0)
    text: TextTowerConfig = Field(default_factory=TextTowerConfig)
    init_logit_scale: float = Field(1 / 0.07, gt=0, description="initial 1/tau")
    max_logit_scale: float = Field(100.0, gt=0)
    learn_logit_scale: bool = True
    init_logit_bias: float | None = None
    momentum: float | None = Field(
        None, ge=0, lt=1, description="EMA momentum of a MoCo key encoder (for queue_info_nce); None = none"
    )


class TwoTowerConfig(DualEncoderConfig):
    vision: VisionTowerConfig = Field(default_factory=VisionTowerConfig)
    pretrained: str | None = Field(
        None, description="hf:DIR (CLIPModel/SiglipModel folder) or open_clip:FILE: the whole dual encoder"
    )


def assemble_dual_encoder(
    cfg: DualEncoderConfig, media_encoder: nn.Module, media_width: int, vocab_size: int
) -> TwoTower:
    """A :class:`TwoTower` from any media encoder ((B, ...) -> (B, media_width)) plus the text
    tower, projections and temperature that ``cfg`` describes (``text.pretrained``: a loaded tower)."""
    t = cfg.text
    if t.pretrained:
        from modalab.models.pretrained.recipe_build import pretrained_text_tower

        txt, text_width = pretrained_text_tower(t.pretrained, vocab_size)
    else:
        txt = TextTransformer(
            vocab_size=vocab_size,
            context_length=t.context_length,
            width=t.width,
            depth=t.depth,
            heads=t.heads,
            mlp_ratio=t.mlp_ratio,
            pool=t.pool,
            trim_padding=t.trim_padding,
        )
        text_width = t.width
    return TwoTower(
        media_encoder,
        txt,
        nn.Linear(media_width, cfg.embed_dim, bias=False),
        nn.Linear(text_width, cfg.embed_dim, bias=False),
        init_logit_scale=cfg.init_logit_scale,
        max_logit_scale=cfg.max_logit_scale,
        learn_logit_scale=cfg.learn_logit_scale,
        init_logit_bias=cfg.init_logit_bias,
    )


@register("model", "two_tower", schema=TwoTowerConfig)
def build_two_tower(
    cfg: TwoTowerConfig, *, image_size: int, in_channels: int, vocab_size: int
) -> TwoTower:
    """CLIP-style dual encoder: small ViT + small text transformer + linear projections; or a
    pretrained one (``pretrained``), or pretrained towers (``vision.pretrained``, ``text.pretrained``)."""
    from modalab.models.pretrained import recipe_build

    if cfg.pretrained:
        return recipe_build.pretrained_dual_encoder(cfg, vocab_size)
    v = cfg.vision
    if v.pretrained:
        tower, width = recipe_build.pretrained_image_tower(v)
        return assemble_dual_encoder(cfg, tower, width, vocab_size)
    vit = VisionTransformer(
        image_size=image_size,
        patch_size=v.patch_size,
        in_channels=in_channels,
        width=v.width,
        depth=v.depth,
        heads=v.heads,
        mlp_ratio=v.mlp_ratio,
        pool=v.pool,
        pos_encoding=v.pos_encoding,
        dynamic_size=v.dynamic_size,
        patch_dropout=v.patch_dropout,
    )
    return assemble_dual_encoder(cfg, vit, v.width, vocab_size)
