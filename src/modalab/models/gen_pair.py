"""Two text-to-image generators side by side, for the AR vs diffusion table (chapter 5.2.2-5.2.3).

``GenPair`` holds a frozen image tokenizer and two generators that read the same caption ids:

- ``ar``: a causal ``UnifiedTransformer`` over ``[GEN, text, BOI, image codes]``; next-token loss on
  the codes, sampled code by code and decoded by the tokenizer.
- ``diffusion``: a ``GaussianDiffusion`` whose ``Denoiser`` cross-attends to the hidden states of
  ``diffusion_text``, a second ``UnifiedTransformer`` of the same shape over ``[GEN, text]``
  (the same text conditioning as the AR path, with its own weights so neither generator's loss
  trains the other).

``ema_update`` keeps an exponential moving average of a module (the diffusion branch's sampler
weights). Both parts are built by ``build_gen_pair`` from a recipe's ``model`` section.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from modalab.config import NamedBase
from modalab.models.unified import Denoiser, GaussianDiffusion, UnifiedTransformer
from modalab.models.unified_builder import DiffusionPart, TokenizerBranch, TransformerPart
from modalab.registry import register
from modalab.vision.quantizers import build_quantizer
from modalab.vision.tokenizer import ImageTokenizer
from modalab.vision.tokenizer_builders import num_down_for


class GenPairConfig(NamedBase):
    text_context: int = Field(10, gt=2, description="caption tokens incl. <bos>/<eos>")
    tokenizer: TokenizerBranch = Field(default_factory=TokenizerBranch)
    ar: TransformerPart = Field(default_factory=TransformerPart, description="the AR transformer")
    diffusion_text: TransformerPart = Field(default_factory=TransformerPart,
                                            description="the diffusion branch's text encoder")
    diffusion: DiffusionPart = Field(default_factory=DiffusionPart)


class GenPair(nn.Module):
    """Tokenizer + AR transformer + (text encoder, diffusion decoder); images (C, H, W) in [0, 1]."""

    def __init__(self, tokenizer: ImageTokenizer, ar: UnifiedTransformer, diffusion_text: UnifiedTransformer,
                 diffusion: GaussianDiffusion, image_shape: tuple[int, int, int], token_grid: tuple[int, int]) -> None:
        super().__init__()
        self.tokenizer, self.ar, self.diffusion_text, self.diffusion = tokenizer, ar, diffusion_text, diffusion
        self.image_shape, self.token_grid = tuple(image_shape), tuple(token_grid)

    def condition(self, text: Tensor, text_pad: Tensor, text_encoder: nn.Module | None = None
                  ) -> tuple[Tensor, Tensor]:
        """Diffusion condition: hidden states (B, T + 1, D) of [GEN, text] and their padding (B, T + 1)."""
        enc = self.diffusion_text if text_encoder is None else text_encoder
        cond = enc.text_condition(text, text_pad)  # (B, T + 1, D)
        return cond, enc._prompt_pad(text_pad, cond.shape[1])

    def ar_loss(self, text: Tensor, text_pad: Tensor, codes: Tensor) -> Tensor:
        """Next-token cross-entropy of the codes (B, N) given the caption (B, T)."""
        return self.ar.generate_loss(text, codes, text_pad)

    def diffusion_loss(self, text: Tensor, text_pad: Tensor, images: Tensor, p_uncond: float) -> Tensor:
        """Epsilon MSE on images (B, C, H, W) in [0, 1] (mapped to [-1, 1]) given the caption."""
        cond, pad = self.condition(text, text_pad)
        return self.diffusion.loss(images * 2 - 1, cond, pad, p_uncond=p_uncond)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Codes (B, N) -> images (B, C, H, W) in [0, 1]."""
        return self.tokenizer.decode(codes.view(codes.shape[0], *self.token_grid)).clamp(0, 1)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> codes (B, N)."""
        return self.tokenizer.encode(images).flatten(1)


@register("model", "gen_pair", schema=GenPairConfig)
def build_gen_pair(cfg: GenPairConfig, *, text_vocab: int, image_size: int, channels: int) -> GenPair:
    """VQ/FSQ tokenizer + AR transformer over its codes + text encoder and diffusion decoder."""
    t = cfg.tokenizer
    vq = dict(dead_code_threshold=t.dead_code_threshold) if t.quantizer == "vq" else {}
    tok = ImageTokenizer(build_quantizer(t.quantizer, t.latent_dim, t.codebook_size, **vq), in_channels=channels,
                         channels=t.channels, num_down=num_down_for(image_size, t.token_grid), latent_dim=t.latent_dim)

    def transformer(p: TransformerPart) -> UnifiedTransformer:
        return UnifiedTransformer(text_vocab, tok.codebook_size, t.token_grid**2, dim=p.dim, depth=p.depth,
                                  heads=p.heads, max_text=cfg.text_context, dropout=p.dropout)

    enc = transformer(cfg.diffusion_text)
    den = Denoiser(channels, cfg.diffusion_text.dim, channels=cfg.diffusion.channels)
    return GenPair(tok, transformer(cfg.ar), enc, GaussianDiffusion(den, cfg.diffusion.timesteps),
                   image_shape=(channels, image_size, image_size), token_grid=(t.token_grid, t.token_grid))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (buffers copied)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_update: decay={decay}; expected 0 <= decay < 1")
    e, m = list(ema.parameters()), list(model.parameters())
    if len(e) != len(m):
        raise ValueError(f"ema_update: {len(e)} EMA parameters vs {len(m)} model parameters")
    torch._foreach_lerp_(e, m, 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)
