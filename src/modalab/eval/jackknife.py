"""Per-item scores for corpus-level metrics (mAP, micro F1), so paired statistics can resample items.

``experiment/paired.two_level_bootstrap`` resamples per-item scores and averages them; that is right
for accuracy (0/1 per item) but a corpus metric such as macro mAP or micro F1 is not a mean over
items. Its jackknife values are: with ``theta`` the metric on all ``N`` items and ``theta_(-i)`` the
metric without item ``i``,

    psi_i = theta + (N - 1) * (mean_j theta_(-j) - theta_(-i))

Their mean is ``theta`` exactly, and the variance of their mean is ``(N - 1) / N`` times the
jackknife variance of ``theta``: resampling ``psi`` resamples the metric's first-order (influence
function) linearisation. ``jackknife_values`` computes them for any metric by leaving each item out;
``micro_f1_values`` is the closed form for micro F1 from per-item counts (tested against it).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from modalab.eval.caption_events import parse_events
from modalab.eval.tagging import mean_average_precision


def _from_leave_one_out(theta: float, loo: np.ndarray) -> np.ndarray:
    return theta + (loo.size - 1) * (loo.mean() - loo)


def jackknife_values(stat: Callable[[np.ndarray], float], n: int) -> np.ndarray:
    """``psi`` (n,) of ``stat(kept_indices) -> float`` over ``n`` items (the plain reference)."""
    if n < 2:
        raise ValueError(f"jackknife_values needs at least 2 items, got {n}")
    idx = np.arange(n)
    theta = float(stat(idx))
    loo = np.array([float(stat(np.delete(idx, i))) for i in range(n)])  # (n,)
    if not np.all(np.isfinite(loo)) or not np.isfinite(theta):
        raise ValueError("jackknife_values: the metric is not finite on every leave-one-out subset")
    return _from_leave_one_out(theta, loo)


def map_values(target: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Jackknife values (N,) of macro mAP (``eval.tagging.mean_average_precision``) of target, score (N, C)."""
    target, score = np.asarray(target), np.asarray(score)
    if target.ndim != 2 or target.shape != score.shape:
        raise ValueError(f"map_values expects two (N, C) arrays, got {target.shape}, {score.shape}")
    return jackknife_values(lambda keep: mean_average_precision(target[keep], score[keep])[0], len(target))


def micro_f1(tp: float, fp: float, fn: float) -> float:
    """2 TP / (2 TP + FP + FN), and 0 when nothing was predicted or expected (as eval.caption_events)."""
    return 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0


def micro_f1_values(counts: np.ndarray) -> np.ndarray:
    """Jackknife values (N,) of micro F1 from per-item ``counts`` (N, 3) of (tp, fp, fn), in closed form."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3 or c.shape[0] < 2:
        raise ValueError(f"micro_f1_values expects (N >= 2, 3) counts (tp, fp, fn), got {c.shape}")
    tp, fp, fn = c.sum(0)
    rest = c.sum(0) - c  # (N, 3): totals without item i
    den = 2 * rest[:, 0] + rest[:, 1] + rest[:, 2]
    loo = np.where(rest[:, 0] > 0, 2 * rest[:, 0] / np.where(den > 0, den, 1.0), 0.0)
    return _from_leave_one_out(micro_f1(tp, fp, fn), loo)


def caption_event_counts(captions: list[str], events: list[list[dict]], classes: tuple[str, ...]) -> np.ndarray:
    """Per-caption (tp, fp, fn) (N, 3) of the classes mentioned, as ``eval.caption_events.event_scores`` sums them."""
    if len(captions) != len(events):
        raise ValueError(f"caption_event_counts: {len(captions)} captions but {len(events)} event lists")
    rows = []
    for cap, evs in zip(captions, events):
        ps, ts = set(parse_events(cap, classes)), {e["label"] for e in evs}
        rows.append((len(ps & ts), len(ps - ts), len(ts - ps)))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)
