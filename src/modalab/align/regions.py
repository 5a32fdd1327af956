"""Region features from a ViT's patch tokens, without RoIAlign: the mean of the patch tokens whose
centres fall inside each box (the regional level of ``fine_grained.multi_granularity_terms``).

Boxes are pixel ``(x0, y0, x1, y1)`` with exclusive ends, as ``data/scenes.boxes`` writes them.
Patch ``(i, j)`` of a ``(gh, gw)`` grid of ``patch_size`` pixels has its centre at
``((j + 0.5) * patch_size, (i + 0.5) * patch_size)``; it belongs to a box when
``x0 <= cx < x1`` and ``y0 <= cy < y1``. A box that holds no patch centre gets no feature: it is
marked invalid (the caller counts and drops it).
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_patch_weights(boxes: Tensor, grid: tuple[int, int], patch_size: int) -> Tensor:
    """0/1 membership of each patch centre in each box.

    Args:
        boxes: (B, R, 4) pixel boxes ``(x0, y0, x1, y1)``, exclusive ends (any real dtype).
        grid: (gh, gw) patches per column and row; patches are flattened row by row.
        patch_size: patch side in pixels.
    Returns:
        (B, R, gh * gw) in the dtype of ``boxes`` (float32 for integer boxes).
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"box_patch_weights expects (B, R, 4) boxes, got shape {tuple(boxes.shape)}")
    gh, gw = grid
    dt = boxes.dtype if boxes.is_floating_point() else torch.float32
    b = boxes.to(dt)
    cy = (torch.arange(gh, device=b.device, dtype=dt) + 0.5) * patch_size  # (gh,)
    cx = (torch.arange(gw, device=b.device, dtype=dt) + 0.5) * patch_size  # (gw,)
    in_x = (cx >= b[..., 0:1]) & (cx < b[..., 2:3])  # (B, R, gw)
    in_y = (cy >= b[..., 1:2]) & (cy < b[..., 3:4])  # (B, R, gh)
    inside = in_y[..., :, None] & in_x[..., None, :]  # (B, R, gh, gw)
    return inside.flatten(2).to(dt)  # (B, R, gh * gw)


def pool_regions(
    patch_tokens: Tensor, boxes: Tensor, box_mask: Tensor, grid: tuple[int, int], patch_size: int
) -> tuple[Tensor, Tensor]:
    """Mean of the patch tokens inside each box.

    Args:
        patch_tokens: (B, N, D) patch tokens (no class token), N = gh * gw, row by row.
        boxes: (B, R, 4) pixel boxes, padded; box_mask: (B, R) bool, True = a real box.
        grid, patch_size: as in :func:`box_patch_weights`.
    Returns:
        ``regions`` (B, R, D) (zero where invalid) and ``valid`` (B, R) bool: a real box that
        holds at least one patch centre.
    """
    b, n, _ = patch_tokens.shape
    if n != grid[0] * grid[1]:
        raise ValueError(
            f"pool_regions: {n} patch tokens do not fill a {grid[0]}x{grid[1]} grid (patch dropout "
            f"drops tokens; region pooling needs all of them)"
        )
    if boxes.shape[:2] != box_mask.shape or boxes.shape[0] != b:
        raise ValueError(
            f"pool_regions: boxes {tuple(boxes.shape)} and box_mask {tuple(box_mask.shape)} do not "
            f"match {b} images"
        )
    w = box_patch_weights(boxes.to(patch_tokens.dtype), grid, patch_size)  # (B, R, N)
    w = w * box_mask[..., None].to(w.dtype)
    count = w.sum(dim=2)  # (B, R)
    valid = count > 0
    w = w / count.clamp_min(1.0)[..., None]
    return torch.einsum("brn,bnd->brd", w, patch_tokens), valid
