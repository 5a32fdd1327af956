"""Paired tests over seeds: which difference between two arms a sweep can claim, and how big an
effect it could have seen.

Arms are paired by seed (same seed = same data split, same initialisation draw); ``d = b - a`` per
seed. Everything here is a plain function of arrays.

- :func:`sign_flip_p`: the exact two-sided sign-flip permutation test of ``mean(d) = 0``. Under the
  null every one of the ``2^n`` sign assignments is equally likely; p is the share whose
  ``|sum(s * d)|`` reaches the observed ``|sum(d)|``. Its smallest value is ``2 / 2^n`` (0.0625 at
  5 seeds, 0.03125 at 6): fewer than 6 seeds can never reach 0.05.
- :func:`paired_t`: the two-sided paired t-test (scipy ``ttest_rel``).
- :func:`holm`: Holm's step-down adjusted p-values across a sweep's comparisons.
- :func:`mde_paired`: the minimum detectable effect: the smallest ``|mean(d)|`` the paired t-test
  detects with the given power, from the SD of the differences and n (noncentral t).
- :func:`two_level_bootstrap`: the interval of the mean difference resampling seeds, then the test
  items of each drawn seed, paired across arms (both arms' answers on the same items).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from modalab._optional import lazy

sps = lazy("scipy.stats")  # imported on first use (modalab --help stays light)
optimize = lazy("scipy.optimize")

EXACT_MAX_N = 20  # 2^20 sign assignments enumerated at most; beyond, a seeded Monte Carlo


def _diffs(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_.shape != b_.shape or a_.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and of equal length, got {a_.shape} and {b_.shape}")
    return b_ - a_  # (n,)


def sign_flip_p(d: Sequence[float], n_mc: int = 200_000, seed: int = 0) -> float:
    """Exact two-sided sign-flip p of ``mean(d) = 0`` (NaN for no pairs).

    n <= 20: every sign assignment enumerated; above, ``n_mc`` random ones (seeded), counted with
    the observed one so that p > 0.
    """
    x = np.asarray(d, dtype=np.float64)
    n = x.size
    if n == 0:
        return math.nan
    obs = abs(float(x.sum()))
    tol = 1e-12 * max(1.0, float(np.abs(x).sum()))
    if n <= EXACT_MAX_N:
        codes = np.arange(2**n, dtype=np.int64)[:, None]  # (2^n, 1)
        signs = 1.0 - 2.0 * ((codes >> np.arange(n)) & 1)  # (2^n, n): every +-1 pattern once
        stats = np.abs(signs @ x)  # (2^n,)
        return float(np.count_nonzero(stats >= obs - tol)) / 2**n
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_mc, n))
    hits = np.count_nonzero(np.abs(signs @ x) >= obs - tol)
    return (hits + 1) / (n_mc + 1)


def min_sign_flip_p(n: int) -> float:
    """The smallest p the exact sign-flip test can give at n pairs: ``2 / 2^n``."""
    return 2.0 / 2**n if n > 0 else math.nan


def seeds_needed(m: int, alpha: float = 0.05) -> int:
    """The fewest pairs at which the exact sign-flip test can be significant after Holm over ``m``
    comparisons (Holm's first step multiplies the smallest p, ``2 / 2^n``, by ``m``)."""
    return next(n for n in range(1, 64) if m * min_sign_flip_p(n) < alpha)


def paired_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(t, p)`` of the two-sided paired t-test of ``b - a``; NaN below 2 pairs.

    With zero variance the test is degenerate: p = 0 when every difference is the same non-zero
    value (t infinite), 1 when all are zero.
    """
    d = _diffs(a, b)
    if d.size < 2:
        return math.nan, math.nan
    if np.allclose(d, d[0], rtol=0, atol=1e-15):
        return (math.copysign(math.inf, d[0]), 0.0) if d[0] != 0 else (0.0, 1.0)
    r = sps.ttest_rel(np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64))
    return float(r.statistic), float(r.pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given; NaN stays NaN and is not counted).

    Sorted ascending, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``; reject ``H_(i)`` when
    ``adj_(i) <= alpha``, which is Holm's rule ``p_(i) <= alpha / (m - i + 1)`` applied in order.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out.tolist()
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out.tolist()


def t_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at n pairs for a true mean difference ``effect``."""
    df = n - 1
    crit = float(sps.t.ppf(1 - alpha / 2, df))
    nc = abs(effect) * math.sqrt(n) / sd
    far = float(sps.nct.cdf(-crit, df, nc))  # the wrong-sign tail: tiny, NaN in scipy for a large nc
    near = float(sps.nct.sf(crit, df, nc))
    return min(1.0, (1.0 if math.isnan(near) else near) + (0.0 if math.isnan(far) else far))


def mde_paired(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true ``|mean(b - a)|`` the two-sided paired t-test at n pairs detects with ``power``.

    Solves ``t_power(delta) = power`` (noncentral t with ``df = n - 1``, ``nc = delta sqrt(n) / sd``).
    NaN below 2 pairs or for a non-finite SD; 0 for a zero SD.
    """
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    hi = sd
    while t_power(hi, sd, n, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda e: t_power(e, sd, n, alpha) - power, 0.0, hi, xtol=1e-12 * sd))


def two_level_bootstrap(
    a: Sequence[np.ndarray], b: Sequence[np.ndarray], n_boot: int = 4000, conf: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean difference, lo, hi)`` of ``b - a`` from per-item scores of each seed.

    ``a[s]`` and ``b[s]`` hold the two arms' per-item scores (e.g. 0/1 correctness) on the same items
    of seed ``s`` (the lengths may differ between seeds). Each replicate draws ``S`` seeds with
    replacement, then for each drawn seed its items with replacement, the same items for both arms,
    and averages the per-seed mean differences. The point estimate is the mean over seeds of the
    per-seed mean differences; the interval the percentile interval of the replicates.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"two_level_bootstrap: need the same, non-zero number of seeds, got {len(a)}, {len(b)}")
    diffs = []
    for s, (x, y) in enumerate(zip(a, b)):
        x_, y_ = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x_.shape != y_.shape or x_.ndim != 1 or x_.size == 0:
            raise ValueError(f"two_level_bootstrap: seed {s}: arms must score the same non-empty items, "
                             f"got shapes {x_.shape} and {y_.shape}")
        diffs.append(y_ - x_)  # (N_s,)
    n_seeds = len(diffs)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n_seeds, size=(n_boot, n_seeds))  # (n_boot, S): seeds drawn
    means = np.empty((n_boot, n_seeds))
    for s, d in enumerate(diffs):  # a fresh item resample for every time seed s is drawn
        where = np.nonzero(pick == s)
        items = rng.integers(0, d.size, size=(where[0].size, d.size))  # (k_s, N_s)
        means[where] = d[items].mean(axis=1)
    boot = means.mean(axis=1)  # (n_boot,)
    lo, hi = np.quantile(boot, [(1 - conf) / 2, (1 + conf) / 2])
    return float(np.mean([d.mean() for d in diffs])), float(lo), float(hi)


def t_interval(d: Sequence[float], conf: float = 0.95) -> tuple[float, float]:
    """The paired t-interval of ``mean(d)`` (NaN below 2 pairs)."""
    x = np.asarray(d, dtype=np.float64)
    if x.size < 2:
        return math.nan, math.nan
    half = float(sps.t.ppf(0.5 + conf / 2, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return float(x.mean()) - half, float(x.mean()) + half
