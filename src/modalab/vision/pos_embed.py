"""2D position encodings for patch grids of any size (chapter 5.2.4).

- :func:`sincos_2d` / :func:`sincos_2d_at`: fixed sine-cosine (MAE style): the first half of the
  width encodes the row, the second half the column; each half is [sin(pos*w), cos(pos*w)].
- :func:`resample_pos_embed`: learned absolute embeddings moved to a new grid (timm's semantics:
  split the prefix tokens, interpolate the grid in float32, re-attach the prefix).
- :class:`FactorizedPosEmbed`: NaViT's separate learned row and column tables, summed.
- :class:`AxialRoPE2d`: rotary embedding where half of the rotated pairs turn with the row and
  half with the column; :func:`apply_rope` rotates q and k so that q.k depends only on the 2D
  offset between the two tokens. ``rope_fn`` adapts it to ``modalab.layers`` (``rope(q, k)``).

Positions are 0-based patch (row, col) indices; prefix tokens (class token) use angle 0 (RoPE is
the identity there) and a zero additive encoding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def grid_positions(
    grid: tuple[int, int], device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Row-major (rows, cols) indices of a (gh, gw) grid, each (gh*gw,) int64."""
    gh, gw = grid
    rows = torch.arange(gh, device=device).repeat_interleave(gw)  # (gh*gw,)
    cols = torch.arange(gw, device=device).repeat(gh)  # (gh*gw,)
    return rows, cols


def _sincos_1d(pos: Tensor, dim: int, temperature: float) -> Tensor:
    """(...,) positions -> (..., dim) = [sin(pos*w_i), cos(pos*w_i)], w_i = T^(-i/(dim/2))."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim // 2)
    omega = temperature**-omega  # (dim/2,)
    ang = pos.to(torch.float64)[..., None] * omega  # (..., dim/2)
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


def sincos_2d_at(rows: Tensor, cols: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2D sin-cos encoding at given positions: (...,) rows and cols -> (..., dim) float32.

    ``dim`` must be divisible by 4. Computed in float64, returned in float32.
    """
    if dim % 4:
        raise ValueError(f"sincos_2d: width {dim} must be divisible by 4 (sin/cos for rows and cols)")
    half = dim // 2
    emb = torch.cat([_sincos_1d(rows, half, temperature), _sincos_1d(cols, half, temperature)], -1)
    return emb.float()


def sincos_2d(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2D sin-cos table for a (gh, gw) grid, row-major: (gh*gw, dim) float32."""
    rows, cols = grid_positions(grid)
    return sincos_2d_at(rows, cols, dim, temperature)


def resample_pos_embed(
    posemb: Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
    mode: str = "bicubic",
    antialias: bool = True,
) -> Tensor:
    """Resample learned absolute position embeddings to ``new_grid``.

    Args:
        posemb: (1, P + gh*gw, D) with P = ``num_prefix_tokens`` leading (class) tokens.
        new_grid: target (rows, cols). old_grid: source grid, square sqrt(N) when None.
        mode: ``F.interpolate`` mode; ``antialias`` applies to bilinear/bicubic when shrinking.
    Returns:
        (1, P + new_rows*new_cols, D) in the dtype of ``posemb``; the prefix is unchanged.
        The same grid returns ``posemb`` itself.
    """
    if posemb.dim() != 3:
        raise ValueError(f"resample_pos_embed: posemb must be (1, P + N, D), got {tuple(posemb.shape)}")
    n = posemb.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(
                f"resample_pos_embed: {n} grid tokens are not a square; pass old_grid=(rows, cols)"
            )
        old_grid = (side, side)
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(
            f"resample_pos_embed: old_grid {old_grid} has {old_grid[0] * old_grid[1]} tokens but posemb "
            f"has {n} after {num_prefix_tokens} prefix tokens"
        )
    if new_grid == old_grid:
        return posemb
    prefix, grid_tokens = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    d = posemb.shape[-1]
    x = grid_tokens.float().reshape(-1, old_grid[0], old_grid[1], d)  # (B, gh, gw, D)
    x = x.permute(0, 3, 1, 2)  # (B, D, gh, gw)
    x = interpolate_grid(x, new_grid, mode, antialias)  # (B, D, nh, nw)
    x = x.permute(0, 2, 3, 1).reshape(-1, new_grid[0] * new_grid[1], d)  # (B, nh*nw, D)
    x = x.to(posemb.dtype)
    return torch.cat([prefix, x], dim=1)


def interpolate_grid(
    x: Tensor, size: tuple[int, int], mode: str = "bicubic", antialias: bool = True
) -> Tensor:
    """``F.interpolate`` of a (B, D, gh, gw) float grid to ``size`` (align_corners=False)."""
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    aa = antialias and mode in ("bilinear", "bicubic")
    return F.interpolate(x, size=size, mode=mode, antialias=aa, **kw)


class FactorizedPosEmbed(nn.Module):
    """NaViT's factorized embeddings: ``row_embed[row] + col_embed[col]``.

    Shapes: rows, cols (...,) int64 with 0 <= row < max_rows, 0 <= col < max_cols -> (..., dim).
    """

    def __init__(self, max_rows: int, max_cols: int, dim: int, std: float = 0.02) -> None:
        super().__init__()
        self.row_embed = nn.Parameter(torch.randn(max_rows, dim) * std)
        self.col_embed = nn.Parameter(torch.randn(max_cols, dim) * std)

    def forward(self, rows: Tensor, cols: Tensor) -> Tensor:
        max_rows, max_cols = self.row_embed.shape[0], self.col_embed.shape[0]
        if rows.numel() and (int(rows.max()) >= max_rows or int(cols.max()) >= max_cols):
            raise ValueError(
                f"FactorizedPosEmbed: positions up to (row {int(rows.max())}, col {int(cols.max())}) exceed "
                f"the tables ({max_rows} rows, {max_cols} cols); raise max_grid or resize the image"
            )
        return self.row_embed[rows] + self.col_embed[cols]


class AxialRoPE2d(nn.Module):
    """Axial 2D rotary position embedding for heads of size ``head_dim`` (divisible by 4).

    The head is read as head_dim/2 pairs; the first head_dim/4 pairs rotate by row * w_i and the
    last head_dim/4 by col * w_i, with w_i = theta^(-i/(head_dim/4)).
    """

    def __init__(self, head_dim: int, theta: float = 100.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(
                f"AxialRoPE2d: head_dim {head_dim} must be divisible by 4 (pairs for rows and cols)"
            )
        quarter = head_dim // 4
        freqs = theta ** -(torch.arange(quarter, dtype=torch.float64) / quarter)  # (Dh/4,)
        self.register_buffer("freqs", freqs.float(), persistent=False)
        self.head_dim = head_dim

    def angles(self, rows: Tensor, cols: Tensor) -> Tensor:
        """(...,) rows and cols (float or int) -> (..., head_dim/2) rotation angles."""
        f = self.freqs
        return torch.cat([rows[..., None].to(f.dtype) * f, cols[..., None].to(f.dtype) * f], dim=-1)


def apply_rope(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate consecutive pairs (x[2i], x[2i+1]) of x (..., N, Dh) by ``angles`` (..., N, Dh/2)."""
    x2 = x.unflatten(-1, (-1, 2))  # (..., N, Dh/2, 2)
    a, b = x2[..., 0], x2[..., 1]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)  # (..., N, Dh)


def rope_fn(angles: Tensor):
    """A ``rope(q, k)`` callable for ``modalab.layers``; angles (B, N, Dh/2) or (N, Dh/2)."""
    ang = angles[:, None] if angles.dim() == 3 else angles  # (B, 1, N, Dh/2): broadcast over heads

    def rope(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return apply_rope(q, ang), apply_rope(k, ang)

    return rope
