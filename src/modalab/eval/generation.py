"""Distribution-level generation metrics on features: FID, KID, improved precision / recall.

All functions take feature matrices (N, D) (any float tensor or array; computed in float64) from a
fixed network, in modalab the in-house ``eval/feature_net.FeatureCNN`` trained on the real training
split. Scores are in-domain: comparable between modalab runs with the same feature network, not
with published Inception numbers. Always read a FID beside ``real_floor``: the FID between two
disjoint halves of the real reference set, i.e. what sampling noise alone gives at that size
(FID is biased upwards at small N, so a generator cannot be judged below this floor).

- FID (Heusel et al. 2017): |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)). The trace of the
  square root is taken on the symmetric form S_r^(1/2) S_g S_r^(1/2) (same eigenvalues as S_r S_g)
  through ``eigh``, so no complex parts arise; eigenvalues below zero beyond round-off are an error.
- KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3, averaged
  over random subsets; ``kid_std`` is the spread over subsets and ``kid_se`` its standard error.
- Precision / recall (Kynkaanniemi et al. 2019): each real feature gets a ball reaching its k-th
  nearest real neighbour (k = 3); precision is the share of generated features inside some real
  ball, recall the share of real features inside some generated ball (built the same way).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _f64(x: Tensor | np.ndarray, name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise ValueError(f"{name}: need features (N >= 2, D); got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: features contain NaN or inf")
    return a


def feature_stats(feats: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) in float64."""
    a = _f64(feats, "feature_stats")
    return a.mean(0), np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1])


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     rtol: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID formula), float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = len(mu1)
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"frechet_distance: shapes mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, "
                         f"sigma2 {s2.shape} do not describe two Gaussians of one dimension")
    r1 = _sqrt_psd(s1)
    w = np.linalg.eigvalsh(r1 @ s2 @ r1)  # eigenvalues of S1 S2, from its symmetric form
    scale = max(float(np.abs(w).max()), 1e-300)
    if w.min() < -rtol * scale - 1e-12:
        raise ValueError(f"frechet_distance: sigma1^(1/2) sigma2 sigma1^(1/2) has eigenvalue {w.min():.3g} "
                         f"< 0 (largest {scale:.3g}); the covariances are not positive semi-definite")
    tr_sqrt = float(np.sqrt(np.clip(w, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def fid(real: Tensor | np.ndarray, fake: Tensor | np.ndarray) -> float:
    """FID between two feature sets (N, D) and (M, D)."""
    return frechet_distance(*feature_stats(real), *feature_stats(fake))


def real_floor(real: Tensor | np.ndarray, seed: int = 0) -> float:
    """FID between two random disjoint halves of the real features: the sampling-noise floor."""
    a = _f64(real, "real_floor")
    if len(a) < 4:
        raise ValueError(f"real_floor: need at least 4 real features; got {len(a)}")
    perm = np.random.default_rng(seed).permutation(len(a))
    half = len(a) // 2
    return fid(a[perm[:half]], a[perm[half : 2 * half]])


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel between samples (m, D) and (n, D)."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def kid(real: Tensor | np.ndarray, fake: Tensor | np.ndarray, subsets: int = 50, subset_size: int = 100,
        seed: int = 0) -> dict[str, float]:
    """KID: mean unbiased MMD^2 over ``subsets`` random subsets (drawn without replacement inside
    each subset, size min(subset_size, N, M)); returns kid, kid_std (over subsets) and kid_se."""
    r, f = _f64(real, "kid real"), _f64(fake, "kid fake")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"kid: feature dims differ: real {r.shape[1]}, fake {f.shape[1]}")
    if subsets < 1:
        raise ValueError(f"kid: subsets must be >= 1; got {subsets}")
    m = min(subset_size, len(r), len(f))
    rng = np.random.default_rng(seed)
    vals = np.array([mmd2_unbiased(r[rng.choice(len(r), m, replace=False)],
                                   f[rng.choice(len(f), m, replace=False)]) for _ in range(subsets)])
    std = float(vals.std(ddof=1)) if subsets > 1 else 0.0
    return {"kid": float(vals.mean()), "kid_std": std, "kid_se": std / np.sqrt(subsets)}


def _kth_radius(a: np.ndarray, k: int) -> np.ndarray:
    d = torch.cdist(torch.from_numpy(a), torch.from_numpy(a))  # (N, N)
    return d.kthvalue(k + 1, dim=1).values.numpy()  # k-th neighbour; index 0 is the point itself


def _coverage(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray) -> float:
    d = torch.cdist(torch.from_numpy(queries), torch.from_numpy(manifold))  # (Q, N)
    return float((d <= torch.from_numpy(radii)[None]).any(dim=1).double().mean())


def precision_recall(real: Tensor | np.ndarray, fake: Tensor | np.ndarray, k: int = 3) -> dict[str, float]:
    """Improved precision and recall with k-NN manifolds (Kynkaanniemi et al. 2019)."""
    r, f = _f64(real, "precision_recall real"), _f64(fake, "precision_recall fake")
    if k < 1 or k >= min(len(r), len(f)):
        raise ValueError(f"precision_recall: k={k} needs 1 <= k < min(N_real={len(r)}, N_fake={len(f)})")
    return {"precision": _coverage(r, _kth_radius(r, k), f), "recall": _coverage(f, _kth_radius(f, k), r)}


def generation_scores(real: Tensor | np.ndarray, fake: Tensor | np.ndarray, seed: int = 0,
                      k: int = 3) -> dict[str, float]:
    """fid, kid, kid_std, kid_se, precision, recall of ``fake`` against ``real`` features."""
    return {"fid": fid(real, fake), **kid(real, fake, seed=seed), **precision_recall(real, fake, k)}
