"""VQ-VAE-2 (Razavi et al. 2019): a hierarchy of two code maps, the bottom conditioned on the top.

The bottom encoder halves the image ``bottom_down`` times (features ``h_b`` at H / 2**bottom_down);
the top encoder halves those ``top_down`` more times and is quantised into the *top* code map
(global structure). A top decoder maps the top codes back up to the bottom resolution, and the
bottom quantiser codes ``conv1x1([h_b, top_decoder(q_t)])``: the bottom map only has to add what
the top one left out (local detail). The image decoder reads both: ``[q_b, upsample(q_t)]``.

Both quantisers are injected (``VectorQuantizer(use_ema=True, dead_code_threshold=t)`` gives the
paper's EMA codebooks, with dead-code restarts; ``build_vqvae2`` builds that). Contract beside
``ImageTokenizer``:

- ``forward(x (B, C, H, W)) -> (recon (B, C, H, W), indices (B, Nt + Nb), aux)``: the top codes
  (raster order) then the bottom codes shifted by ``K_top``, so one index space of
  ``codebook_size = K_top + K_bottom`` (usage / perplexity are over both books);
  ``aux["loss"]`` sums both quantisers' losses, ``aux["usage_top"]`` / ``aux["usage_bottom"]``.
- ``encode(x) -> (top (B, ht, wt), bottom (B, hb, wb))``; ``decode(top, bottom) -> images``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from modalab.vision.quantizers import VectorQuantizer
from modalab.vision.tokenizer import Decoder, Encoder


class VQVAE2(nn.Module):
    """Two-level VQ-VAE.

    Args:
        top_quantizer, bottom_quantizer: ``(..., latent_dim) -> (quantized, indices, aux)``
            modules with ``indices_to_codes`` and ``codebook_size``.
        in_channels: image channels; channels: width of the first encoder stage.
        bottom_down: stride-2 stages image -> bottom map; top_down: bottom map -> top map.
        latent_dim: channels of both code maps.
    """

    def __init__(self, top_quantizer: nn.Module, bottom_quantizer: nn.Module, in_channels: int = 1,
                 channels: int = 16, bottom_down: int = 2, top_down: int = 1,
                 latent_dim: int = 16) -> None:
        super().__init__()
        if bottom_down < 1 or top_down < 1:
            raise ValueError(f"VQVAE2: bottom_down={bottom_down}, top_down={top_down}; expected >= 1 each")
        for name, q in (("top", top_quantizer), ("bottom", bottom_quantizer)):
            if getattr(q, "dim", latent_dim) != latent_dim or getattr(q, "codebook_size", None) is None:
                raise ValueError(f"VQVAE2: the {name} quantizer needs dim={latent_dim} and a codebook_size")
        hidden = channels * 2**bottom_down
        d = latent_dim
        self.enc_b = Encoder(in_channels, channels, bottom_down, hidden)  # (B, hidden, hb, wb)
        self.enc_t = Encoder(hidden, hidden, top_down, d)  # (B, D, ht, wt)
        self.dec_t = Decoder(d, hidden, top_down, d)  # top codes -> (B, D, hb, wb)
        self.pre_b = nn.Conv2d(hidden + d, d, 1)  # the bottom quantiser's input, conditioned on q_t
        up: list[nn.Module] = []
        for _ in range(top_down):  # the top codes at the bottom resolution, for the image decoder
            up += [nn.ConvTranspose2d(d, d, 4, stride=2, padding=1)]
        self.up_t = nn.Sequential(*up)
        self.dec = Decoder(in_channels, channels, bottom_down, 2 * d)
        self.top, self.bottom = top_quantizer, bottom_quantizer
        self.factor_b, self.factor_t = 2**bottom_down, 2 ** (bottom_down + top_down)
        self.latent_dim = latent_dim

    @property
    def last_layer(self) -> Tensor:
        return self.dec.conv_out.weight

    @property
    def codebook_size(self) -> int:
        return int(self.top.codebook_size) + int(self.bottom.codebook_size)

    def tokens_per_image(self, height: int, width: int) -> int:
        """Top plus bottom codes of an ``height`` x ``width`` image."""
        if height % self.factor_t or width % self.factor_t:
            raise ValueError(f"VQVAE2: image {height}x{width} is not divisible by the top map's "
                             f"factor {self.factor_t}; resize to a multiple of {self.factor_t}")
        return (height // self.factor_t) * (width // self.factor_t) + \
            (height // self.factor_b) * (width // self.factor_b)

    def bits_per_image(self, height: int, width: int) -> float:
        """Exact index bits of an ``height`` x ``width`` image: each level's tokens x log2 of its own
        book (the shared index space of ``forward`` would count log2(K_top + K_bottom) per token)."""
        n_all = self.tokens_per_image(height, width)
        n_top = (height // self.factor_t) * (width // self.factor_t)
        return n_top * math.log2(int(self.top.codebook_size)) + \
            (n_all - n_top) * math.log2(int(self.bottom.codebook_size))

    @staticmethod
    def _q(quantizer: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Quantise channel-first z (B, D, h, w) -> (q (B, D, h, w), indices (B, h, w), aux)."""
        q, idx, aux = quantizer(z.permute(0, 2, 3, 1))  # (B, h, w, D)
        return q.permute(0, 3, 1, 2), idx, aux

    def bottom_input(self, h_b: Tensor, q_t: Tensor) -> Tensor:
        """What the bottom quantiser codes: features h_b (B, hidden, hb, wb) and the top codes
        q_t (B, D, ht, wt) -> (B, D, hb, wb). The conditioning of the bottom map on the top."""
        return self.pre_b(torch.cat([h_b, self.dec_t(q_t)], 1))

    def decode_latents(self, q_t: Tensor, q_b: Tensor) -> Tensor:
        """q_t (B, D, ht, wt), q_b (B, D, hb, wb) -> images (B, C, H, W)."""
        return self.dec(torch.cat([q_b, self.up_t(q_t)], 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        self.tokens_per_image(x.shape[-2], x.shape[-1])  # shape check
        h_b = self.enc_b(x)  # (B, hidden, hb, wb)
        q_t, i_t, a_t = self._q(self.top, self.enc_t(h_b))  # (B, D, ht, wt), (B, ht, wt)
        q_b, i_b, a_b = self._q(self.bottom, self.bottom_input(h_b, q_t))  # (B, D, hb, wb)
        indices = torch.cat([i_t.flatten(1), i_b.flatten(1) + int(self.top.codebook_size)], 1)
        aux = {"loss": a_t["loss"] + a_b["loss"], "usage_top": a_t["usage"], "usage_bottom": a_b["usage"],
               "perplexity_top": a_t["perplexity"], "perplexity_bottom": a_b["perplexity"]}
        return self.decode_latents(q_t, q_b), indices, aux  # indices (B, Nt + Nb)

    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) -> top (B, ht, wt) and bottom (B, hb, wb) indices (call ``.eval()``)."""
        h_b = self.enc_b(x)
        q_t, i_t, _ = self._q(self.top, self.enc_t(h_b))
        _, i_b, _ = self._q(self.bottom, self.bottom_input(h_b, q_t))
        return i_t, i_b

    def decode(self, top: Tensor, bottom: Tensor) -> Tensor:
        """Top (B, ht, wt) and bottom (B, hb, wb) indices -> images (B, C, H, W)."""
        q_t = self.top.indices_to_codes(top).permute(0, 3, 1, 2)  # (B, D, ht, wt)
        q_b = self.bottom.indices_to_codes(bottom).permute(0, 3, 1, 2)  # (B, D, hb, wb)
        return self.decode_latents(q_t, q_b)


def build_vqvae2(top_codes: int = 64, bottom_codes: int = 64, in_channels: int = 1, channels: int = 16,
                 bottom_down: int = 2, top_down: int = 1, latent_dim: int = 16, decay: float = 0.99,
                 dead_code_threshold: float = 1.0, kmeans_init: bool = True, beta: float = 0.25,
                 use_ema: bool = True) -> VQVAE2:
    """VQ-VAE-2 with the paper's EMA codebooks (and dead-code restarts) at both levels."""
    vq = lambda k: VectorQuantizer(k, latent_dim, beta=beta, use_ema=use_ema, decay=decay,  # noqa: E731
                                   kmeans_init=kmeans_init, dead_code_threshold=dead_code_threshold)
    return VQVAE2(vq(top_codes), vq(bottom_codes), in_channels=in_channels, channels=channels,
                  bottom_down=bottom_down, top_down=top_down, latent_dim=latent_dim)
