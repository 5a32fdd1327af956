"""Reading one tar shard so that nothing is lost silently.

Python's ``tarfile`` stops iterating *without an error* at a bad header anywhere after the first
member: a truncated shard, or a few KB of garbage inside one, simply looks shorter. So after the
members run out, :func:`iter_tar` checks that the archive really ended: the bytes from the reader's
offset to the end of the file must be the end-of-archive marker (at least one 512-byte block, all
zeros). Anything else — no marker at all (truncated at a member boundary), a truncated header,
random bytes — is corruption. When the index says how many samples the shard holds (``expected``),
the count read is checked against it as well, and every sample that could not be read is counted.

``on_error="error"`` raises :class:`ShardError` naming the shard, the byte offset and the last good
member; ``on_error="skip"`` appends one message per lost sample (or per refused member) to
``skipped``, so the run's ``num_skipped`` is a sample count. Members whose names are absolute or
contain ``..`` are refused the same way.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Iterator

from modalab.errors import ModalabError

BLOCK = 512


class ShardError(ModalabError, ValueError):
    """A shard or one of its members cannot be read; the message names the shard and member."""


class Members(dict):
    """``{ext: bytes}`` of one sample, remembering the shard it came from (for messages)."""

    def __init__(self, shard: str) -> None:
        super().__init__()
        self.shard = shard


def _tail_problem(fh: io.BufferedReader, offset: int, size: int) -> str | None:
    """None if ``offset..size`` is a proper end-of-archive marker, else what is wrong."""
    if offset >= size:
        return f"the file ends at byte {size} without the end-of-archive marker (truncated)"
    fh.seek(offset)
    tail = fh.read(size - offset)
    if len(tail) < BLOCK:
        return f"the file ends at byte {size} inside the end-of-archive marker (truncated)"
    if tail.strip(b"\0"):
        return f"unreadable tar header at byte {offset} of {size} (corrupt or truncated data)"
    return None


def iter_tar(path: Path, on_error: str = "skip", skipped: list[str] | None = None,
             expected: int | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {ext: bytes})`` per sample of one tar shard, in file order, read in memory.

    ``expected``: the sample count the index recorded for this shard (None: unknown)."""
    path = Path(path)
    counted = 0  # samples yielded or already reported as skipped

    def bad(msg: str) -> None:
        nonlocal counted
        counted += 1
        if on_error == "error":
            raise ShardError(f"{msg} (data.on_error=skip skips such samples and counts them)")
        if skipped is not None:
            skipped.append(msg)

    key, files, last = None, Members(path.name), None
    problem = None
    try:
        plain = path.suffix == ".tar"  # compressed shards: no byte-level end check
        with open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r:" if plain else "r:*") as tar:
            size = path.stat().st_size
            for m in tar:
                name = m.name
                if not m.isfile():
                    continue
                if name.startswith("/") or ".." in Path(name).parts:
                    bad(f"{path}: member {name!r} leaves the shard root; refused")
                    continue
                k, _, ext = name.rsplit("/", 1)[-1].partition(".")
                if k != key and key is not None:
                    counted += 1
                    yield key, files
                    files = Members(path.name)
                key = k
                f = tar.extractfile(m)
                files[ext] = f.read() if f is not None else b""
                last = name
            problem = _tail_problem(fh, tar.offset, size) if plain else None
    except (tarfile.TarError, OSError, EOFError) as e:
        problem = f"{type(e).__name__}: {e}"
    if problem is None:
        if key is not None:
            counted += 1
            yield key, files
        if expected is not None and counted != expected:
            problem = f"it holds {counted} sample(s) but the index recorded {expected}"
        else:
            return
    where = f"after member {last!r}" if last else "before its first member"
    msg = f"{path}: corrupted shard {where}: {problem}"
    if on_error == "error":
        raise ShardError(f"{msg} (data.on_error=skip skips the unreadable samples and counts them)")
    if expected is not None and counted >= expected:
        bad(msg)  # more samples than recorded: nothing lost, but the index is stale
        return
    for _ in range((expected - counted) if expected is not None else 1):  # unknown count: >= 1 lost
        bad(f"{msg}; sample {counted + 1} of {expected if expected is not None else '?'} lost")
