"""Residual vector quantisation (SoundStream, Zeghidour et al. 2021; chapter 5.3 audio tokens).

Level 1 quantises the encoder frame ``z``; level l quantises what the levels before it left over,
``r_l = z - sum_{j<l} q_j``. The decoder sees ``sum_l q_l``; each extra level adds
``log2(codebook_size)`` bits per frame. *Quantiser dropout*: in training each batch keeps only the
first ``n_q`` levels, ``n_q`` uniform in [1, n_levels], so one model serves every bitrate.

Each level is a nearest-code quantiser with EMA codebook updates (Laplace smoothed), k-means
initialisation (on its first training batch, or for all levels at once, residual by residual, on a
pool of frames: ``ResidualVQ.init_codebooks``) and dead-code restarts from the current residuals.
(vision/quantizers.py has the image-side VectorQuantizer; modality packages do not import each
other, so the audio side keeps this small one.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def nearest_code(x: Tensor, codes: Tensor) -> Tensor:
    """Index (N,) of the nearest row of ``codes`` (K, C) for each row of ``x`` (N, C)."""
    dist2 = x.pow(2).sum(1, keepdim=True) - 2 * x @ codes.t() + codes.pow(2).sum(1)[None]  # (N, K)
    return dist2.argmin(dim=1)


class EMACodebook(nn.Module):
    """One RVQ level: nearest-code lookup, EMA updates, k-means init, dead-code restart."""

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, eps: float = 1e-5,
                 kmeans_iters: int = 10, dead_code_threshold: float = 1.0) -> None:
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"EMACodebook: num_codes={num_codes}, dim={dim}; expected >= 1")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMACodebook: decay={decay}; expected 0 <= decay < 1")
        self.num_codes, self.dim, self.decay, self.eps = num_codes, dim, decay, eps
        self.kmeans_iters, self.dead_code_threshold = kmeans_iters, dead_code_threshold
        embed = torch.randn(num_codes, dim)
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("initted", torch.tensor(False))

    @torch.no_grad()
    def fit_kmeans(self, x: Tensor) -> None:
        """Lloyd's k-means on ``x`` (N, C); sets the codes and the EMA statistics."""
        n, k = x.shape[0], self.num_codes
        pick = torch.randperm(n, device=x.device)[:k] if n >= k else torch.randint(0, n, (k,), device=x.device)
        centroids = x[pick].clone()
        counts = torch.zeros(k, device=x.device, dtype=x.dtype)
        for _ in range(max(self.kmeans_iters, 1)):
            idx = nearest_code(x, centroids)
            counts = torch.bincount(idx, minlength=k).to(x.dtype)
            sums = torch.zeros_like(centroids).index_add_(0, idx, x)
            filled = counts > 0  # empty clusters keep their centroid
            centroids[filled] = sums[filled] / counts[filled, None]
        self.embed.copy_(centroids)
        self.cluster_size.copy_(counts)
        self.embed_avg.copy_(centroids * counts[:, None])
        self.initted.fill_(True)

    @torch.no_grad()
    def _update(self, x: Tensor, idx: Tensor) -> None:
        counts = torch.bincount(idx, minlength=self.num_codes).to(x.dtype)
        sums = torch.zeros_like(self.embed_avg).index_add_(0, idx, x)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        size = (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n  # Laplace smoothing
        self.embed.copy_(self.embed_avg / size[:, None])
        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead:
            samples = x[torch.randint(0, x.shape[0], (n_dead,), device=x.device)]
            self.embed[dead] = samples
            self.cluster_size[dead] = self.dead_code_threshold
            self.embed_avg[dead] = samples * self.dead_code_threshold

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (N, C) -> (codes (N, C) without gradient, indices (N,))."""
        if self.training and not bool(self.initted):
            self.fit_kmeans(x.detach())
        idx = nearest_code(x.detach(), self.embed)
        q = self.embed[idx]
        if self.training:
            self._update(x.detach(), idx)
        return q, idx

    def decode(self, idx: Tensor) -> Tensor:
        return self.embed[idx]


class ResidualVQ(nn.Module):
    """``n_levels`` EMA codebooks applied to successive residuals, with quantiser dropout.

    ``forward(z)`` with ``z`` (B, T, dim) returns ``(quantized (B, T, dim), codes (B, T, n_q) long,
    aux)``; gradients pass straight through to ``z``. ``aux``: ``loss`` (commitment, weight
    ``beta``), ``n_q``, ``usage`` (per-level share of codes used, list), ``residual_norms``
    (mean squared residual after each level, list).
    """

    def __init__(self, n_levels: int, num_codes: int, dim: int, beta: float = 0.25,
                 quantizer_dropout: bool = True, decay: float = 0.99,
                 dead_code_threshold: float = 1.0) -> None:
        super().__init__()
        if n_levels < 1:
            raise ValueError(f"ResidualVQ: n_levels={n_levels}; expected >= 1")
        self.n_levels, self.num_codes, self.dim, self.beta = n_levels, num_codes, dim, beta
        self.quantizer_dropout = quantizer_dropout
        self.levels = nn.ModuleList(EMACodebook(num_codes, dim, decay=decay,
                                                dead_code_threshold=dead_code_threshold)
                                    for _ in range(n_levels))

    def bits_per_frame(self, n_q: int) -> float:
        return n_q * math.log2(self.num_codes)

    def forward(self, z: Tensor, n_q: int | None = None) -> tuple[Tensor, Tensor, dict]:
        if z.shape[-1] != self.dim:
            raise ValueError(f"ResidualVQ: input last dim {z.shape[-1]}, expected {self.dim}")
        if n_q is None:
            n_q = (int(torch.randint(1, self.n_levels + 1, ())) if self.training and self.quantizer_dropout
                   else self.n_levels)
        if not 1 <= n_q <= self.n_levels:
            raise ValueError(f"ResidualVQ: n_q={n_q}; expected 1..{self.n_levels}")
        lead = z.shape[:-1]
        x = z.reshape(-1, self.dim).float()  # (N, C)
        residual = x.detach()
        total = torch.zeros_like(x)
        codes, usage, norms = [], [], []
        for level in self.levels[:n_q]:
            q, idx = level(residual)
            residual = residual - q
            total = total + q
            codes.append(idx)
            usage.append(float(torch.unique(idx).numel()) / self.num_codes)
            norms.append(float(residual.pow(2).mean()))
        commitment = F.mse_loss(x, total.detach())
        quantized = (total.detach() + (x - x.detach())).reshape(*lead, self.dim).to(z.dtype)
        aux = {"loss": self.beta * commitment, "n_q": n_q, "usage": usage, "residual_norms": norms}
        return quantized, torch.stack(codes, -1).reshape(*lead, n_q), aux

    @torch.no_grad()
    def init_codebooks(self, z: Tensor) -> list[float]:
        """Data-driven start of every level at once (SoundStream / EnCodec): level 1 is fitted by
        k-means to the frames ``z`` (..., dim), level l to the residual the levels before it leave.
        Call it with a pool of trained encoder frames when quantisation starts (issue 18: codebooks
        fitted lazily, each on the one batch where quantiser dropout first reaches it, left the
        higher levels fitted to a few hundred frames). Returns the mean squared residual before
        level 1 and after each level (length ``n_levels + 1``)."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"ResidualVQ.init_codebooks: input last dim {z.shape[-1]}, expected {self.dim}")
        residual = z.reshape(-1, self.dim).float().detach()
        if residual.shape[0] < 1:
            raise ValueError("ResidualVQ.init_codebooks: no frames given")
        norms = [float(residual.pow(2).mean())]
        for level in self.levels:
            level.fit_kmeans(residual)
            residual = residual - level.decode(nearest_code(residual, level.embed))
            norms.append(float(residual.pow(2).mean()))
        return norms

    def decode(self, codes: Tensor) -> Tensor:
        """codes (B, T, n_q) long -> (B, T, dim), the sum of each level's code."""
        if codes.shape[-1] > self.n_levels:
            raise ValueError(f"ResidualVQ.decode: {codes.shape[-1]} levels given, model has {self.n_levels}")
        return sum(self.levels[i].decode(codes[..., i]) for i in range(codes.shape[-1]))
