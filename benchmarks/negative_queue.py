"""Negative queue: the chapter's ``deque(maxlen)`` + ``random.sample`` sketch vs our ring buffer.

One training step = enqueue a batch of 256 rows, then draw 4,096 negatives from a full queue of
65,536 x 256 (float32), as the rows of one (4096, 256) tensor the loss can use.

    baseline (chapter 5.1.4): ``queue.extend(features.detach())`` on a ``deque(maxlen=65536)``,
        ``random.sample(queue, 4096)``, then ``torch.stack`` (the loss needs a tensor);
    ours: ``align.queue.NegativeQueue``: preallocated (65536, 256) buffer, slice write with
        wrap-around, ``randperm`` + one gather.

Time: best of the repeats (default allocator); peak memory: extra resident memory of one step,
measured in a fresh child process with large blocks forced to mmap (Linux: reset VmHWM via /proc/self/clear_refs,
VmHWM - VmRSS before); filled: resident size of the full structure.
Both run in this process.

Run: python benchmarks/negative_queue.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from collections import deque

import torch

from _memory import fix_malloc, peak_mib, status_mib  # benchmarks/_memory.py

from modalab.align.queue import NegativeQueue

SIZE, DIM, BATCH, DRAW = 65536, 256, 256, 4096


class ChapterBank:
    """The chapter's sketch, verbatim apart from names."""

    def __init__(self, size: int = SIZE) -> None:
        self.queue: deque = deque(maxlen=size)

    def update(self, features: torch.Tensor) -> None:
        self.queue.extend(features.detach())

    def sample(self, n: int) -> list:
        return random.sample(self.queue, min(n, len(self.queue)))


def _rss_of(make) -> tuple[object, float]:
    before = status_mib("VmRSS")
    obj = make()
    return obj, status_mib("VmRSS") - before


def _min_time(fn, reps: int) -> float:
    """Best of ``reps`` calls: the least disturbed by other jobs on a shared machine."""
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def _setup() -> tuple[dict, dict]:
    """Filled bank and queue, and the step functions keyed by name."""
    torch.manual_seed(0)
    random.seed(0)
    torch.set_num_threads(1)
    batches = [torch.randn(BATCH, DIM) for _ in range(8)]

    def fill_bank() -> ChapterBank:
        bank = ChapterBank()
        for _ in range(SIZE // BATCH):
            bank.update(torch.randn(BATCH, DIM))
        return bank

    def fill_queue() -> NegativeQueue:
        q = NegativeQueue(SIZE, DIM)
        for _ in range(SIZE // BATCH):
            q.enqueue(torch.randn(BATCH, DIM))
        return q

    bank, bank_mib = _rss_of(fill_bank)
    queue, queue_mib = _rss_of(fill_queue)
    it = iter(range(10**9))

    def base_step() -> torch.Tensor:
        bank.update(batches[next(it) % 8])
        return torch.stack(bank.sample(DRAW))  # (4096, 256)

    def base_sample_only() -> list:
        return bank.sample(DRAW)

    def our_step() -> torch.Tensor:
        queue.enqueue(batches[next(it) % 8])
        return queue.sample(DRAW)  # (4096, 256), without replacement like random.sample

    def our_step_repl() -> torch.Tensor:
        queue.enqueue(batches[next(it) % 8])
        return queue.sample(DRAW, replacement=True)

    assert base_step().shape == our_step().shape == (DRAW, DIM)
    steps = {
        "chapter deque + random.sample + stack": base_step,
        "chapter deque + random.sample (list only)": base_sample_only,
        "ours NegativeQueue enqueue + sample": our_step,
        "ours, sample with replacement": our_step_repl,
    }
    held = {name: (bank_mib if name.startswith("chapter") else queue_mib) for name in steps}
    return steps, held


def _peak_in_child(index: int) -> float:
    """Peak of one step in a fresh process whose allocator returns large blocks to the OS."""
    out = subprocess.run(
        [sys.executable, __file__, "--peak-of", str(index)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--peak-of", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_of is not None:
        fix_malloc()
        steps, _ = _setup()
        fn = list(steps.values())[args.peak_of]
        fn()
        print(peak_mib(fn))
        return
    reps = 10 if args.quick else 30
    steps, held = _setup()
    rows = []
    for i, (name, fn) in enumerate(steps.items()):
        rows.append((name, _min_time(fn, reps), _peak_in_child(i), held[name]))
    ours = rows[2][1]
    print(f"queue {SIZE} x {DIM} float32, enqueue {BATCH} rows + draw {DRAW}; torch threads 1; "
          f"best of {reps} repeats")
    print(f"{'method':44s} {'ms/step':>9s} {'peak MiB':>9s} {'filled MiB':>10s} {'vs ours':>8s}")
    for name, t, peak, mib in rows:
        print(f"{name:44s} {t * 1e3:9.3f} {peak:9.1f} {mib:10.1f} {t / ours:7.1f}x")


if __name__ == "__main__":
    main()
