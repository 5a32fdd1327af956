"""Is the process that a ``run.json`` names still alive?

A run records ``pid`` and ``host`` when it starts (and again when it resumes). A run whose
``run.json`` says ``running`` but whose process is gone was killed (SIGKILL, OOM, a reboot): it is
stale, and ``doctor`` says so. A sweep rerun must never delete the folder of a run that is alive.
A pid recorded on another machine cannot be checked from here: it is treated as alive (unknown).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(0) said it exists


def run_process_state(info: dict[str, Any]) -> str:
    """``alive`` | ``dead`` | ``unknown`` (recorded on another host) | ``none`` (no pid recorded,
    e.g. a run directory written by an older modalab) for a run.json."""
    pid = info.get("pid")
    host = info.get("host") or (info.get("machine") or {}).get("host")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return "none"
    if host and host != platform.node():
        return "unknown"
    if pid == os.getpid():
        return "alive"
    return "alive" if pid_alive(pid) and not _reused(pid) else "dead"


def _reused(pid: int) -> bool:
    """True when ``pid`` now belongs to a program that cannot be a modalab run (the pid was
    reused after the run died); False when unsure (no /proc, unreadable)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").lower()
    except OSError:
        return False
    return bool(cmd) and not any(w in cmd for w in (b"python", b"modalab", b"torchrun"))
