"""A small Vision Transformer image encoder for fixed or any-resolution input.

Patch embedding (a strided convolution), a class token, a position encoding, pre-norm transformer
blocks on SDPA, a final norm and a pool (``cls``, ``mean`` or ``attn``).

Position encodings (``pos_encoding``, see ``vision/pos_embed.py``): ``learned`` absolute for the
``image_size`` grid (resampled to other grids when ``dynamic_size``), ``sincos`` fixed 2D,
``factorized`` learned row + column tables (NaViT), ``rope`` axial 2D rotary in every attention
layer, or ``none``. ``patch_dropout`` > 0 enables FLIP masking in training (after the positions).

Shapes: images (B, C, H, W) with H, W multiples of ``patch_size`` -> (B, width) pooled features;
``forward_tokens`` returns (B, 1 + N, width) with N = (H/p)*(W/p) (fewer with patch dropout).
``forward_packed`` takes a :class:`~modalab.vision.packing.PackedBatch` (NaViT) -> (num_images, width).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from modalab.layers import Transformer
from modalab.vision.masking import PatchDropout
from modalab.vision.packing import AttentionPool, PackedBatch, pool_packed
from modalab.vision.pos_embed import (
    AxialRoPE2d,
    FactorizedPosEmbed,
    grid_positions,
    resample_pos_embed,
    rope_fn,
    sincos_2d_at,
)

PosEncoding = Literal["learned", "sincos", "factorized", "rope", "none"]


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping p x p patches and project each to ``width``.

    Shapes: (B, C, H, W) -> (B, N, width), grid (H/p, W/p).
    """

    def __init__(self, in_channels: int, width: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(
                f"image size {tuple(x.shape[-2:])} is not a multiple of the patch size {p}"
            )
        x = self.proj(x)  # (B, width, H/p, W/p)
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid  # (B, N, width)

    def embed_flat(self, patches: Tensor) -> Tensor:
        """Project patches already flattened in (p, p, C) order: (..., p*p*C) -> (..., width)."""
        w = self.proj.weight.permute(0, 2, 3, 1).flatten(1)  # (width, p*p*C)
        return nn.functional.linear(patches, w, self.proj.bias)


class VisionTransformer(nn.Module):
    """ViT encoder; with the defaults, learned absolute positions for a fixed ``image_size``.

    Args:
        image_size: training resolution (square); ``learned`` positions cover its grid.
        patch_size, in_channels, width, depth, heads, mlp_ratio: the usual ViT numbers.
        pool: ``cls`` (class token), ``mean`` (mean of patch tokens) or ``attn`` (attention pool).
        pos_encoding: ``learned`` | ``sincos`` | ``factorized`` | ``rope`` | ``none``.
        dynamic_size: accept grids other than ``image_size``'s (``learned`` is resampled).
        patch_dropout: FLIP ratio of patch tokens dropped in training (0 = off).
        max_grid: rows/cols covered by ``factorized`` tables.
        rope_theta: RoPE base; resample_mode: interpolation for ``learned`` resampling.
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        in_channels: int = 3,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        pool: Literal["cls", "mean", "attn"] = "cls",
        pos_encoding: PosEncoding = "learned",
        dynamic_size: bool = False,
        patch_dropout: float = 0.0,
        max_grid: int = 64,
        rope_theta: float = 100.0,
        resample_mode: str = "bicubic",
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if pool not in ("cls", "mean", "attn"):
            raise ValueError(f"pool '{pool}' is not one of 'cls', 'mean', 'attn'")
        if pos_encoding not in ("learned", "sincos", "factorized", "rope", "none"):
            raise ValueError(
                f"pos_encoding '{pos_encoding}' is not one of learned, sincos, factorized, rope, none"
            )
        self.patch_embed = PatchEmbed(in_channels, width, patch_size)
        self.grid = (image_size // patch_size, image_size // patch_size)
        n = self.grid[0] * self.grid[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_encoding = pos_encoding
        self.dynamic_size = dynamic_size or pos_encoding != "learned"
        self.resample_mode = resample_mode
        if pos_encoding == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, 1 + n, width) * 0.02)
        else:
            self.register_parameter("pos_embed", None)
        factorized = pos_encoding == "factorized"
        self.factorized = FactorizedPosEmbed(max_grid, max_grid, width) if factorized else None
        self.rope = AxialRoPE2d(width // heads, rope_theta) if pos_encoding == "rope" else None
        self.patch_dropout = PatchDropout(patch_dropout) if patch_dropout > 0 else None
        self.transformer = Transformer(width, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(width)
        self.pool = pool
        self.attn_pool = AttentionPool(width, heads) if pool == "attn" else None
        self.width = width
        nn.init.normal_(self.cls_token, std=0.02)

    # ------------------------------------------------------------------ positions

    def _learned_for_grid(self, grid: tuple[int, int]) -> Tensor:
        """(1, 1 + gh*gw, width) learned table on ``grid`` (resampled when it differs)."""
        if grid != self.grid and not self.dynamic_size:
            raise ValueError(
                f"image grid {grid} differs from the trained grid {self.grid}; resize images to "
                f"{self.grid[0] * self.patch_embed.patch_size} pixels or set dynamic_size=True"
            )
        return resample_pos_embed(self.pos_embed, grid, self.grid, 1, self.resample_mode)

    def _additive(self, rows: Tensor, cols: Tensor) -> Tensor | None:
        """Additive encoding of patch positions (...,) -> (..., width); None for rope/none/learned."""
        if self.pos_encoding == "sincos":
            return sincos_2d_at(rows, cols, self.width).to(self.cls_token.dtype)
        if self.pos_encoding == "factorized":
            return self.factorized(rows, cols)
        return None

    def _angles(self, rows: Tensor, cols: Tensor, prefix: Tensor) -> Tensor:
        """RoPE angles (..., Dh/2) for each token; zero (identity) at prefix tokens."""
        ang = self.rope.angles(rows, cols)
        return ang.masked_fill(prefix[..., None], 0.0)

    # ------------------------------------------------------------------ image batches

    def forward_tokens(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1 + N, width), class token first (N smaller with patch dropout)."""
        x, grid = self.patch_embed(images)  # (B, N, width)
        b = x.shape[0]
        cls = self.cls_token.expand(b, -1, -1)  # (B, 1, width)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + N, width)
        rows, cols = grid_positions(grid, x.device)  # (N,)
        if self.pos_encoding == "learned":
            x = x + self._learned_for_grid(grid)
        else:
            add = self._additive(rows, cols)  # (N, width)
            if add is not None:
                x = torch.cat([x[:, :1], x[:, 1:] + add], dim=1)
        angles = None
        if self.rope is not None:
            zero = torch.zeros(1, dtype=torch.long, device=x.device)
            prefix = torch.arange(1 + rows.numel(), device=x.device) == 0
            angles = self._angles(torch.cat([zero, rows]), torch.cat([zero, cols]), prefix)
            # angles: (1 + N, Dh/2)
            angles = angles.expand(b, -1, -1)  # (B, 1 + N, Dh/2)
        if self.patch_dropout is not None and self.training:
            if angles is not None:
                x, angles = self.patch_dropout(x, angles)
            else:
                x = self.patch_dropout(x)
        rope = rope_fn(angles) if angles is not None else None
        return self.norm(self.transformer(x, rope=rope))

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, width) pooled features."""
        return self.pool_tokens(self.forward_tokens(images))

    def pool_tokens(self, tokens: Tensor) -> Tensor:
        """(B, 1 + N, width) -> (B, width) by the configured pool."""
        if self.pool == "cls":
            return tokens[:, 0]
        if self.pool == "mean":
            return tokens[:, 1:].mean(dim=1)
        return self.attn_pool(tokens[:, 1:])[:, 0]

    # ------------------------------------------------------------------ packed (NaViT)

    def forward_packed_tokens(self, batch: PackedBatch) -> Tensor:
        """Packed sequences -> (S, L, width); attention stays within each image."""
        if batch.patch_size != self.patch_embed.patch_size or batch.num_prefix_tokens != 1:
            raise ValueError(
                f"packed batch has patch_size {batch.patch_size} and {batch.num_prefix_tokens} prefix "
                f"tokens; this encoder needs patch_size {self.patch_embed.patch_size} and 1"
            )
        prefix = batch.prefix_mask
        x = self.patch_embed.embed_flat(batch.patches)  # (S, L, width)
        x = torch.where(prefix[..., None], self.cls_token.to(x.dtype), x)
        if self.pos_encoding == "learned":
            x = x + self._packed_learned(batch)
        else:
            add = self._additive(batch.rows, batch.cols)  # (S, L, width)
            if add is not None:
                x = x + add.masked_fill(~(batch.valid & ~prefix)[..., None], 0.0)
        rope = None
        if self.rope is not None:
            rope = rope_fn(self._angles(batch.rows, batch.cols, prefix))  # angles (S, L, Dh/2)
        return self.norm(self.transformer(x, attn_mask=batch.attn_mask(), rope=rope))

    def _packed_learned(self, batch: PackedBatch) -> Tensor:
        """(S, L, width) learned positions: each image's table on its own grid."""
        pos = self.pos_embed.new_zeros(*batch.image_ids.shape, self.width)  # (S, L, width)
        grids = torch.tensor(batch.grids, dtype=torch.long, device=pos.device).view(-1, 2)  # (I, 2)
        tok_grid = grids[batch.image_ids.clamp_min(0)]  # (S, L, 2)
        for grid in sorted(set(batch.grids)):
            table = self._learned_for_grid(grid)[0]  # (1 + gh*gw, width)
            sel = batch.valid & (tok_grid == grids.new_tensor(grid)).all(-1)  # (S, L)
            idx = 1 + batch.rows[sel] * grid[1] + batch.cols[sel]
            pos[sel] = table[idx.masked_fill(batch.prefix_mask[sel], 0)]
        return pos

    def forward_packed(self, batch: PackedBatch) -> Tensor:
        """Packed sequences -> (num_images, width) pooled features, in image order.

        ``patch_dropout`` does not apply here: packed batches drop tokens when they are built
        (``pack_images(..., drop=rate)``), NaViT's token dropping.
        """
        return pool_packed(self.forward_packed_tokens(batch), batch, self.pool, self.attn_pool)

    @property
    def num_patches(self) -> int:
        return math.prod(self.grid)
