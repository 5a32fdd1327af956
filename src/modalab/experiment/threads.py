"""How many intra-op threads a run takes: ``train.num_threads`` capped per torchrun process, and a
warning when the machine's other work already fills its cores."""

from __future__ import annotations

import os


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_process(requested: int) -> int:
    """``train.num_threads``, capped so that the processes torchrun starts on this machine
    (LOCAL_WORLD_SIZE) do not ask for more threads than it has cores: 2 processes of a 2-thread
    recipe on 2 cores run at one thread each."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if local <= 1:
        return requested
    return max(1, min(requested, _cores() // local))


def oversubscribed(threads: int, load: float | None = None, cores: int | None = None) -> str | None:
    """A warning when ``threads`` intra-op threads meet a machine whose other work already fills its
    cores (1-minute load average): spinning OpenMP threads that wait for each other then run many
    times slower than one thread (the default recipe at 2 threads: ~9x slower at load 7 on 2 cores)."""
    if threads <= 1:
        return None
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this platform
            return None
    cores = _cores() if cores is None else cores
    if load < cores:  # the load average counts this process too (a notebook, a test): only a full machine
        return None
    return (f"train.num_threads={threads} on a busy machine (load average {load:.1f} on {cores} cores): "
            f"threads that wait for each other can run many times slower than one; "
            f"consider train.num_threads=1 (results differ from {threads} threads only in float rounding)")
