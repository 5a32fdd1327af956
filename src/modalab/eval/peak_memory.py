"""Peak resident memory of one piece of work on CPU (train step, sampling), in MiB.

``tracemalloc`` sees only Python's allocator, not the tensors PyTorch allocates with ``malloc``, so
the process's resident set is measured instead (Linux): freed heap is handed back to the system
(``malloc_trim``), the kernel's high-water mark is reset (``/proc/self/clear_refs`` 5), the work
runs, and the result is the high-water mark ``VmHWM`` minus the resident set before the work.
It counts everything the work touches (activations, gradients, optimiser state it creates,
allocator slack) and is a measure for comparing two pieces of work in one process, not an exact
byte count.
"""

from __future__ import annotations

import ctypes
import gc
import re
from pathlib import Path
from typing import Any, Callable

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _kib(field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.M)
    if m is None:
        raise RuntimeError(f"peak_memory: no {field} line in {_STATUS}")
    return int(m.group(1))


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the measure keeps the allocator's cache
        pass


def peak_rss_mib(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn()``; return its result and its peak resident memory above the start, in MiB."""
    if not (_STATUS.exists() and _CLEAR.exists()):
        raise RuntimeError(f"peak_memory: needs Linux {_STATUS} and {_CLEAR}; not found on this system")
    _trim()
    _CLEAR.write_text("5")  # reset VmHWM to the current resident set
    before = _kib("VmRSS")
    out = fn()
    return out, max(0, _kib("VmHWM") - before) / 1024
