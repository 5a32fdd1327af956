"""A convolutional image tokenizer: encoder -> injected quantizer -> decoder (chapter 5.2.3).

The encoder halves the resolution ``num_down`` times (factor f = 2**num_down: a 32x32 image gives
8x8 tokens with f = 4, 4x4 with f = 8) and maps to ``latent_dim`` channels; the quantizer
(``VectorQuantizer``, ``FSQ`` or ``ContinuousQuantizer`` from ``vision/quantizers.py``, or anything
with the same ``forward(z (..., D)) -> (quantized, indices, aux)`` and ``indices_to_codes``
contract) turns each position into a token; the decoder mirrors the encoder. The decoder's last
convolution is exposed as ``last_layer`` for the VQGAN adaptive weight.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """Pre-norm residual block: x + conv(silu(norm(conv(silu(norm(x)))))), (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """(B, in_ch, H, W) -> (B, latent_dim, H / 2**num_down, W / 2**num_down)."""

    def __init__(self, in_ch: int, channels: int, num_down: int, latent_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, channels, 3, padding=1)]
        ch = channels
        for _ in range(num_down):
            layers += [ResBlock(ch), nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1)]
            ch *= 2
        layers += [ResBlock(ch), _norm(ch), nn.SiLU(), nn.Conv2d(ch, latent_dim, 1)]
        self.net = nn.Sequential(*layers)
        self.out_channels = ch

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, latent_dim, h, w) -> (B, out_ch, h * 2**num_down, w * 2**num_down)."""

    def __init__(self, out_ch: int, channels: int, num_down: int, latent_dim: int) -> None:
        super().__init__()
        ch = channels * 2**num_down
        layers: list[nn.Module] = [nn.Conv2d(latent_dim, ch, 3, padding=1), ResBlock(ch)]
        for _ in range(num_down):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(ch, ch // 2, 3, padding=1), ResBlock(ch // 2)]
            ch //= 2
        layers += [_norm(ch), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(ch, out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        return self.conv_out(self.net(z))


class ImageTokenizer(nn.Module):
    """Encoder, quantizer and decoder; ``encode`` gives tokens, ``decode`` images.

    Args:
        quantizer: module mapping (..., latent_dim) -> (quantized, indices | None, aux dict).
        in_channels: image channels (1 for digits).
        channels: width of the first encoder stage; doubled at each downsampling.
        num_down: number of stride-2 stages; the downsampling factor is ``2**num_down``.
        latent_dim: channels handed to the quantizer.
    """

    def __init__(
        self,
        quantizer: nn.Module,
        in_channels: int = 1,
        channels: int = 32,
        num_down: int = 2,
        latent_dim: int = 16,
    ) -> None:
        super().__init__()
        if num_down < 0:
            raise ValueError(f"ImageTokenizer: num_down={num_down}; expected >= 0")
        qdim = getattr(quantizer, "dim", latent_dim)
        if qdim != latent_dim:
            raise ValueError(
                f"ImageTokenizer: quantizer.dim={qdim} but latent_dim={latent_dim}; make them equal"
            )
        self.encoder = Encoder(in_channels, channels, num_down, latent_dim)
        self.decoder = Decoder(in_channels, channels, num_down, latent_dim)
        self.quantizer = quantizer
        self.factor = 2**num_down
        self.latent_dim = latent_dim

    @property
    def last_layer(self) -> Tensor:
        """Weight of the decoder's final convolution (for the VQGAN adaptive weight)."""
        return self.decoder.conv_out.weight

    @property
    def codebook_size(self) -> int | None:
        return getattr(self.quantizer, "codebook_size", None)

    def tokens_per_image(self, height: int, width: int) -> int:
        """Number of tokens an ``height`` x ``width`` image becomes."""
        if height % self.factor or width % self.factor:
            raise ValueError(
                f"ImageTokenizer: image {height}x{width} is not divisible by the downsampling "
                f"factor {self.factor}; resize to a multiple of {self.factor}"
            )
        return (height // self.factor) * (width // self.factor)

    def quantize(self, x: Tensor) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """Images (B, C, H, W) -> quantized latents (B, h, w, D), indices (B, h, w), aux."""
        self.tokens_per_image(x.shape[-2], x.shape[-1])  # shape check
        z = self.encoder(x).permute(0, 2, 3, 1)  # (B, h, w, D)
        return self.quantizer(z)

    def decode_latent(self, q: Tensor) -> Tensor:
        """Quantized latents (B, h, w, D) -> images (B, C, H, W)."""
        return self.decoder(q.permute(0, 3, 1, 2))  # (B, D, h, w)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """Images (B, C, H, W) -> reconstruction (B, C, H, W), indices (B, h, w) | None, aux."""
        q, indices, aux = self.quantize(x)
        return self.decode_latent(q), indices, aux

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> token indices (B, h, w); continuous latents (B, h, w, D).

        Call ``.eval()`` first: in training mode a VQ quantizer updates its EMA statistics.
        """
        q, indices, _ = self.quantize(x)
        return q if indices is None else indices

    def decode(self, tokens: Tensor) -> Tensor:
        """Token indices (B, h, w) (or continuous latents (B, h, w, D)) -> images (B, C, H, W)."""
        return self.decode_latent(self.quantizer.indices_to_codes(tokens))
