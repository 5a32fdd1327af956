"""Loss-curve stability of one training run: the final loss and the count of spikes.

A spike is a step whose loss exceeds ``ratio`` times the median of the ``window`` steps before it
(a robust running level, so a slow decrease is never a spike and a single outlier is). The final
loss is the mean of the last ``tail`` share of the steps. Across seeds, the table reports the
standard deviation of the final loss and the spike counts.
"""

from __future__ import annotations

import numpy as np


def count_spikes(losses: list[float] | np.ndarray, window: int = 20, ratio: float = 1.5) -> int:
    """Steps i >= window with loss[i] > ratio * median(loss[i - window : i])."""
    a = np.asarray(losses, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"count_spikes: need a 1-d loss curve; got shape {a.shape}")
    if window < 1 or ratio <= 1:
        raise ValueError(f"count_spikes: window={window}, ratio={ratio}; expected window >= 1, ratio > 1")
    if len(a) <= window:
        return 0
    med = np.array([np.median(a[i - window : i]) for i in range(window, len(a))])
    return int((a[window:] > ratio * med).sum()) + int((~np.isfinite(a)).sum())


def final_loss(losses: list[float] | np.ndarray, tail: float = 0.05) -> float:
    """Mean of the last ``tail`` share of the curve (at least one step)."""
    a = np.asarray(losses, dtype=np.float64)
    if a.ndim != 1 or len(a) == 0:
        raise ValueError(f"final_loss: need a non-empty 1-d loss curve; got shape {a.shape}")
    if not 0 < tail <= 1:
        raise ValueError(f"final_loss: tail={tail}; expected 0 < tail <= 1")
    return float(a[-max(1, int(round(tail * len(a)))) :].mean())
