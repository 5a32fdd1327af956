"""Semantic audio tokens by k-means over encoder features (chapter 5.3; MusicLM / AudioLM).

AudioLM and MusicLM take "semantic" tokens as the nearest k-means centroid of each frame of a
self-supervised encoder (w2v-BERT) at a low frame rate; the acoustic tokens come from a codec's
RVQ. Here the features are any encoder's frames (B, T, D); the tokeniser standardises each
feature with the training mean/std, fits k-means (k-means++ seeding, Lloyd iterations) and maps
each frame to its nearest centroid.

    tok = KMeansTokenizer.fit(train_feats.reshape(-1, D), k=32, seed=0)
    sem = tok.encode(feats)            # (B, T, D) -> (B, T) long in [0, k)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modalab.audio.rvq import nearest_code


def kmeans_pp_init(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): ``x`` (N, D) -> centroids (k, D)."""
    n = x.shape[0]
    first = int(torch.randint(0, n, (1,), generator=gen))
    cent = [x[first]]
    d2 = (x - x[first]).pow(2).sum(1)  # (N,)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # fewer distinct points than k: repeat a point
            idx = int(torch.randint(0, n, (1,), generator=gen))
        else:
            idx = int(torch.multinomial(d2 / total, 1, generator=gen))
        cent.append(x[idx])
        d2 = torch.minimum(d2, (x - x[idx]).pow(2).sum(1))
    return torch.stack(cent)


def lloyd(x: Tensor, centroids: Tensor, iters: int) -> tuple[Tensor, float]:
    """Lloyd iterations from ``centroids`` (k, D) on ``x`` (N, D); empty clusters keep their
    centroid. Returns (centroids, inertia = mean squared distance to the nearest centroid)."""
    c = centroids.clone()
    k = c.shape[0]
    for _ in range(iters):
        idx = nearest_code(x, c)
        counts = torch.bincount(idx, minlength=k).to(x.dtype)
        sums = torch.zeros_like(c).index_add_(0, idx, x)
        filled = counts > 0
        new = c.clone()
        new[filled] = sums[filled] / counts[filled, None]
        if torch.allclose(new, c):
            c = new
            break
        c = new
    idx = nearest_code(x, c)
    return c, float((x - c[idx]).pow(2).sum(1).mean())


class KMeansTokenizer(nn.Module):
    """Frame features (..., D) -> token ids (...) by the nearest of ``k`` centroids.

    Buffers (saved with the weights): ``mean``, ``std`` (D,) of the training features and
    ``centroids`` (k, D) in the standardised space.
    """

    def __init__(self, centroids: Tensor, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        if centroids.dim() != 2 or mean.shape != (centroids.shape[1],) or std.shape != mean.shape:
            raise ValueError(f"KMeansTokenizer: centroids {tuple(centroids.shape)}, mean {tuple(mean.shape)}, "
                             f"std {tuple(std.shape)}; expected (k, D), (D,), (D,)")
        self.register_buffer("centroids", centroids.float())
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    @classmethod
    def fit(cls, feats: Tensor, k: int, seed: int = 0, iters: int = 50, restarts: int = 3) -> "KMeansTokenizer":
        """Fit on ``feats`` (N, D); the best of ``restarts`` k-means++ runs by inertia."""
        if feats.dim() != 2:
            raise ValueError(f"KMeansTokenizer.fit: feats of shape {tuple(feats.shape)}; expected (N, D)")
        if not 1 <= k <= feats.shape[0]:
            raise ValueError(f"KMeansTokenizer.fit: k={k} with {feats.shape[0]} frames; expected 1 <= k <= N")
        x = feats.detach().float()
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        z = (x - mean) / std
        gen = torch.Generator().manual_seed(seed)
        best: tuple[Tensor, float] | None = None
        for _ in range(max(restarts, 1)):
            c, inertia = lloyd(z, kmeans_pp_init(z, k, gen), iters)
            if best is None or inertia < best[1]:
                best = (c, inertia)
        assert best is not None
        tok = cls(best[0], mean, std)
        tok.inertia = best[1]
        return tok

    def encode(self, feats: Tensor) -> Tensor:
        """(..., D) -> (...) long: index of the nearest centroid of each standardised frame."""
        if feats.shape[-1] != self.centroids.shape[1]:
            raise ValueError(f"KMeansTokenizer.encode: feature dim {feats.shape[-1]}, "
                             f"fitted on {self.centroids.shape[1]}")
        lead = feats.shape[:-1]
        z = (feats.reshape(-1, feats.shape[-1]).float() - self.mean) / self.std  # (N, D)
        return nearest_code(z, self.centroids).reshape(lead)

    def forward(self, feats: Tensor) -> Tensor:
        return self.encode(feats)
