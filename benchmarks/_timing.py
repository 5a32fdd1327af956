"""Timing helper shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def median_seconds(fn: Callable[[], Any], reps: int) -> float:
    """Median wall seconds of ``reps`` calls of ``fn``, after one warm-up call."""
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)
