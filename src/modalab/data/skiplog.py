"""Skipped-input messages that survive DataLoader worker processes.

A streaming dataset decodes in worker processes; what a worker appends to a Python list stays in
that worker, so training-side skips never reached ``results.json``. :class:`SkipLog` keeps the
messages of its own process in memory and has every other process (a worker) append them, one
JSON line each, to a file named when the log was made (``O_APPEND`` writes of one short line do
not interleave). :meth:`SkipLog.messages` merges both and drops repeats (the same corrupt sample
is met again every epoch). The file is removed when the owning process drops the log.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path


class SkipLog:
    """A list-like sink (``append``) for "where: why" messages, readable with :meth:`messages`."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.local: list[str] = []
        self.path = Path(tempfile.gettempdir()) / f"modalab-skips-{self.owner}-{secrets.token_hex(6)}.jsonl"

    def append(self, msg: str) -> None:
        if os.getpid() == self.owner:
            self.local.append(msg)
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(msg) + "\n")

    def messages(self) -> list[str]:
        """Distinct messages in the order first seen (this process first, then the workers)."""
        out = list(self.local)
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn line of a killed worker
        return list(dict.fromkeys(out))

    def __len__(self) -> int:
        return len(self.messages())

    def __del__(self) -> None:
        if getattr(self, "owner", None) == os.getpid():
            try:
                self.path.unlink(missing_ok=True)
            except OSError:  # pragma: no cover - interpreter shutdown
                pass
