"""Peak-memory helpers shared by the benchmarks (Linux: /proc/self)."""

from __future__ import annotations

import ctypes
from typing import Any, Callable


def fix_malloc() -> None:
    """Large blocks always mmap'd (no dynamic threshold), so freed memory leaves the RSS and a
    step's temporary memory shows in its own peak."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except OSError:
        pass


def status_mib(key: str) -> float:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def peak_mib(fn: Callable[[], Any]) -> float:
    """Extra peak resident memory (MiB) of one call: reset VmHWM, run, VmHWM - VmRSS before."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak RSS counter
    before = status_mib("VmRSS")
    fn()
    return max(0.0, status_mib("VmHWM") - before)
