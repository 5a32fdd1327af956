"""Residual vector quantisation (RVQ; SoundStream, Zeghidour et al. 2021; RQ-VAE, Lee et al. 2022).

Level 1 quantises the features, level 2 quantises what level 1 left over, and so on: a feature is
coded as the sum of ``num_levels`` codes, one from each level's codebook, so L codebooks of K
codes address K^L points with L * K stored vectors. Each level is an injected quantizer with the
``VectorQuantizer`` contract (EMA updates, k-means init, dead-code restarts all per level).

Contract as in ``vision/quantizers.py``, except that ``indices`` carry a trailing level axis:
``forward(z (..., dim)) -> (quantized (..., dim), indices (..., L) long, aux)``. The straight-through
estimator is applied once to the sum (gradient identity to ``z``); each level's commitment loss
sees its own residual, whose gradient reaches ``z``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ResidualVQ(nn.Module):
    """Sum of codes from a stack of quantizers, each coding the previous levels' residual.

    Args:
        levels: quantizers (each ``(..., dim) -> (quantized, indices, aux)`` with
            ``indices_to_codes``), all of one ``dim`` and ``codebook_size``.
    """

    def __init__(self, levels: list[nn.Module]) -> None:
        super().__init__()
        if not levels:
            raise ValueError("ResidualVQ: need at least one level")
        dims = {getattr(q, "dim", None) for q in levels}
        sizes = {getattr(q, "codebook_size", None) for q in levels}
        if len(dims) != 1 or None in dims or len(sizes) != 1 or None in sizes:
            raise ValueError(f"ResidualVQ: levels must share one dim and codebook_size; got dims {dims}, "
                             f"codebook sizes {sizes}")
        self.levels = nn.ModuleList(levels)
        self.dim, self.codebook_size, self.num_levels = dims.pop(), sizes.pop(), len(levels)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        if z.shape[-1] != self.dim:
            raise ValueError(f"ResidualVQ: input last dim {z.shape[-1]}, expected {self.dim}")
        total, indices, auxes = torch.zeros_like(z), [], []
        for q in self.levels:
            residual = z - total  # (..., dim); earlier levels' codes are constants here
            quantized, idx, aux = q(residual)
            total = total + quantized.detach()
            indices.append(idx)
            auxes.append(aux)
        out = z + (total - z).detach()  # straight-through once: forward = sum of codes
        stack = lambda k: torch.stack([a[k] for a in auxes])  # noqa: E731  (L,)
        aux = {"loss": stack("loss").sum(), "commitment": stack("commitment").sum(),
               "codebook": stack("codebook").sum(), "usage": stack("usage").mean(),
               "perplexity": stack("perplexity").mean(),
               "residual_norm": (z - total).detach().pow(2).mean()}
        return out, torch.stack(indices, dim=-1), aux  # indices (..., L)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Indices (..., L) long -> sum of the levels' codes (..., dim)."""
        if indices.shape[-1] != self.num_levels:
            raise ValueError(f"ResidualVQ: indices last dim {indices.shape[-1]}, expected {self.num_levels} levels")
        return sum(q.indices_to_codes(indices[..., i]) for i, q in enumerate(self.levels))
