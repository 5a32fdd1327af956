"""Stopping a run cleanly: SIGINT, SIGTERM and SIGHUP all mean "stop", and a sweep's children die
with their sweep.

:class:`StopSignals` installs one handler for the three signals while a run is in progress. Inside
:meth:`StopSignals.deferred` (the training loop of a single-process run) the first signal only
sets a flag: the loop finishes the optimizer step it is in, the runner writes a checkpoint at that
step boundary and records the run as ``interrupted``, so ``--resume`` continues bit-identically. A
second signal, or a signal anywhere else (data loading, evaluation, a multi-process run whose
collectives cannot stop at different steps), raises :class:`Interrupted` at once.

:func:`apply_parent_death_signal` is called first thing by ``modalab``: when the sweep that started
the process put its pid in ``MODALAB_PARENT_PID``, the kernel sends SIGTERM to this process when
that parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere nothing happens), so a SIGKILLed
sweep leaves no orphaned training jobs. It runs in the child itself rather than in a
``preexec_fn``, which is unsafe in a process with threads (the sweep launches from a thread pool).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Iterator

PARENT_ENV = "MODALAB_PARENT_PID"
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s)
PR_SET_PDEATHSIG = 1


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by a signal; ``step`` is the step boundary it stopped at, if any."""

    def __init__(self, signum: int, step: int | None = None) -> None:
        self.signum, self.step = signum, step
        at = f" at step {step}" if step is not None else ""
        super().__init__(f"{signal.Signals(signum).name}{at}")


class StopSignals:
    """Context manager: SIGINT/SIGTERM/SIGHUP raise :class:`Interrupted`, or only set a flag
    inside :meth:`deferred`. Outside the main thread it installs nothing."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._deferring = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._deferring and self.signum is None:
            self.signum = signum
            note = f"\n{signal.Signals(signum).name}: stopping after this step (send it again to stop now)\n"
            try:  # a raw write: the handler may run while the main thread is inside a print
                os.write(2, note.encode())
            except OSError:
                pass
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block the first signal is only recorded (see :meth:`requested`)."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def requested(self) -> bool:
        return self.signum is not None


def apply_parent_death_signal() -> None:
    """SIGTERM this process when the parent named in ``MODALAB_PARENT_PID`` dies (Linux only)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl: nothing to arm
        return
    if str(os.getppid()) != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
