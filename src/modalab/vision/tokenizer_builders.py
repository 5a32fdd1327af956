"""Registered builders of the image tokenizer (model ``image_tokenizer``) and its VQGAN objective
(loss ``vqgan``), with their recipe schemas. The parts are in ``vision/tokenizer.py``,
``vision/quantizers.py`` and ``vision/vqgan.py``; the task that trains them is ``tasks/tokenizer.py``.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator
from torch import nn

from modalab.config import NamedBase
from modalab.registry import register
from modalab.vision.tokenizer import ImageTokenizer
from modalab.vision.quantizers import build_quantizer
from modalab.vision.vqvae2 import VQVAE2, build_vqvae2
from modalab.vision.vqgan import PatchDiscriminator, StructuralLoss, VQGANLoss


# model ------------------------------------------------------------------------------------
class ImageTokenizerConfig(NamedBase):
    quantizer: Literal["vq", "fsq", "continuous", "vqvae2"] = "vq"
    codebook_size: int = Field(256, gt=1, description="K for vq; fsq picks levels with ~K codes; vqvae2: the "
                               "total over both levels, K / 2 codes each (equal total codes against vq)")
    fsq_levels: list[int] | None = Field(None, description="explicit FSQ levels, e.g. [8, 5, 5, 5]")
    token_grid: int = Field(4, gt=0, description="tokens per side: image_size / token_grid = 2**k")
    channels: int = Field(16, gt=0, description="width of the first encoder stage")
    latent_dim: int = Field(16, gt=0, description="channels handed to the quantizer")
    code_dim: int | None = Field(None, gt=0, description="vq: low-dimensional codes (ViT-VQGAN)")
    l2_normalize: bool = Field(False, description="vq: cosine lookup on the unit sphere")
    beta: float = Field(0.25, ge=0, description="vq, vqvae2: commitment weight")
    use_ema: bool = Field(True, description="vq, vqvae2: EMA codebook instead of the codebook loss")
    decay: float = Field(0.99, ge=0, lt=1, description="vq, vqvae2: EMA decay")
    kmeans_init: bool = Field(True, description="vq, vqvae2: k-means on the first training batch")
    dead_code_threshold: float = Field(1.0, ge=0, description="vq, vqvae2: restart codes below this EMA usage")
    kl_weight: float = Field(0.0, ge=0, description="continuous: 0 = no regulariser (identity); > 0 = "
                             "VAE bottleneck, learned variance, this weight on the mean KL per element")
    top_down: int = Field(1, ge=1, description="vqvae2: stride-2 stages from the bottom map (token_grid per "
                          "side) to the top map (token_grid / 2**top_down per side)")

    @model_validator(mode="after")
    def _kl_only_continuous(self) -> "ImageTokenizerConfig":
        if self.kl_weight > 0 and self.quantizer != "continuous":
            raise ValueError(f"model.kl_weight={self.kl_weight} applies to model.quantizer=continuous only; "
                             f"got model.quantizer={self.quantizer}: set kl_weight=0 or quantizer=continuous")
        if self.quantizer == "vqvae2":
            if self.codebook_size % 2:
                raise ValueError(f"model.codebook_size={self.codebook_size}: model.quantizer=vqvae2 splits it "
                                 f"between its two levels; use an even number, e.g. {self.codebook_size + 1}")
            if self.token_grid % 2**self.top_down:
                raise ValueError(f"model.token_grid={self.token_grid} is not divisible by 2**model.top_down="
                                 f"{2**self.top_down}: the vqvae2 top map would not tile the bottom one")
            if self.code_dim is not None or self.l2_normalize:
                raise ValueError("model.code_dim / model.l2_normalize are not supported with "
                                 "model.quantizer=vqvae2; leave them at null / false")
        return self


def num_down_for(image_size: int, token_grid: int) -> int:
    """Stride-2 stages that turn ``image_size`` into ``token_grid`` tokens per side."""
    ratio = image_size / token_grid
    k = round(math.log2(ratio)) if ratio >= 1 else -1
    if k < 0 or 2**k * token_grid != image_size:
        raise ValueError(
            f"model.token_grid={token_grid}: image_size {image_size} / token_grid must be a power of "
            f"two (1, 2, 4, ...); e.g. token_grid={image_size // 4} or data.image_size={token_grid * 4}"
        )
    return k


@register("model", "image_tokenizer", schema=ImageTokenizerConfig)
def build_image_tokenizer(cfg: ImageTokenizerConfig, *, image_size: int,
                          in_channels: int) -> ImageTokenizer | VQVAE2:
    """Convolutional VQ / FSQ / continuous image tokenizer with a token_grid x token_grid output, or
    VQ-VAE-2: that grid as the bottom map under a top map ``2**top_down`` times coarser."""
    if cfg.quantizer == "vqvae2":
        half = cfg.codebook_size // 2
        return build_vqvae2(half, half, in_channels=in_channels, channels=cfg.channels,
                            bottom_down=num_down_for(image_size, cfg.token_grid), top_down=cfg.top_down,
                            latent_dim=cfg.latent_dim, decay=cfg.decay, dead_code_threshold=cfg.dead_code_threshold,
                            kmeans_init=cfg.kmeans_init, beta=cfg.beta, use_ema=cfg.use_ema)
    vq = {}
    if cfg.quantizer == "vq":
        vq = dict(code_dim=cfg.code_dim, l2_normalize=cfg.l2_normalize, beta=cfg.beta, use_ema=cfg.use_ema,
                  decay=cfg.decay, kmeans_init=cfg.kmeans_init, dead_code_threshold=cfg.dead_code_threshold)
    elif cfg.quantizer == "continuous":
        vq = dict(kl_weight=cfg.kl_weight)
    q = build_quantizer(cfg.quantizer, cfg.latent_dim, cfg.codebook_size, cfg.fsq_levels, **vq)
    return ImageTokenizer(q, in_channels=in_channels, channels=cfg.channels,
                          num_down=num_down_for(image_size, cfg.token_grid), latent_dim=cfg.latent_dim)


# objective --------------------------------------------------------------------------------
class VQGANLossConfig(NamedBase):
    rec_loss: Literal["l1", "l2"] = "l1"
    perceptual_weight: float = Field(0.0, ge=0, description="weight of the perceptual term (0: none)")
    perceptual: Literal["structural", "lpips_features"] = Field(
        "structural", description="structural: multi-scale 1-SSIM + gradient L1 (no network); "
        "lpips_features: LPIPS-style distance over a feature CNN trained on the training split")
    feature_net_steps: int = Field(300, gt=0, description="lpips_features: training steps of its feature CNN")
    feature_net_seed: int = Field(1, ge=0, description="lpips_features: its feature CNN's seed (the FID "
                                  "network uses seed 0, so the loss and the metric use different networks)")
    codebook_weight: float = Field(1.0, ge=0)
    use_gan: bool = Field(False, description="add the PatchGAN hinge loss from disc_start on")
    disc_start: int = Field(250, ge=0, description="first step with GAN terms")
    disc_weight: float = Field(0.5, ge=0, description="multiplies the adaptive weight")
    disc_channels: int = Field(16, gt=0)
    disc_lr: float = Field(2e-3, gt=0, description="the discriminator's own AdamW learning rate")


@register("loss", "vqgan", schema=VQGANLossConfig)
def build_vqgan_loss(cfg: VQGANLossConfig, *, in_channels: int = 1, image_size: int = 16,
                     perceptual: nn.Module | None = None) -> VQGANLoss:
    """VQGAN objective: reconstruction + codebook + optional perceptual and adversarial terms.

    ``perceptual``: the module for ``loss.perceptual=lpips_features`` (a ``FeatureLPIPS`` over a
    feature network trained on the training split; the caller owns the data, so it builds it).
    """
    disc = None
    if cfg.use_gan:
        n_layers = 1 if image_size < 16 else 2  # 8x8 inputs are too small for two stride-2 layers
        disc = PatchDiscriminator(in_channels, cfg.disc_channels, n_layers=n_layers)
    if cfg.perceptual_weight <= 0:
        perceptual = None
    elif cfg.perceptual == "structural":
        perceptual = StructuralLoss()
    elif perceptual is None:
        raise ValueError("loss.perceptual=lpips_features needs a feature network trained on the training "
                         "split: build the loss through the tokenizer task (it trains and loads one), or "
                         "pass perceptual=load_feature_lpips(path); or set loss.perceptual=structural")
    return VQGANLoss(disc, perceptual, rec_loss=cfg.rec_loss, perceptual_weight=cfg.perceptual_weight,
                     codebook_weight=cfg.codebook_weight, disc_weight=cfg.disc_weight,
                     disc_start=cfg.disc_start)
