"""Planning for the tiled losses: accumulation dtype, tile size from memory, false-negative masks.

Kept apart from ``tiled.py`` so that the distributed losses share the same choices.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

MiB = 1 << 20
DEFAULT_BUDGET = 160 * MiB  # logit buffers per loss call (4096 x 4096 x 2 in fp32 at D = 512)
MAX_EDGE = 8192


# None: bfloat16 / float16 inputs use low-precision GEMMs where the hardware is fast at them
# (CUDA, or a CPU with AMX); True / False forces the choice (tests, benchmarks).
LOWP_MATMUL: bool | None = None


@functools.lru_cache(maxsize=1)
def _cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        return False
    return False


def lowp_matmul(dtype: torch.dtype, device: torch.device) -> torch.dtype | None:
    """The GEMM dtype for ``dtype`` inputs: ``dtype`` itself if bfloat16/float16 GEMMs are fast
    here (their output is rounded to that dtype, then accumulated in float32), else None (GEMMs
    in the float32 accumulation dtype: on AVX2-only CPUs bfloat16 GEMMs are ~10x slower)."""
    if dtype not in (torch.bfloat16, torch.float16):
        return None
    use = LOWP_MATMUL
    if use is None:
        use = device.type == "cuda" or (device.type == "cpu" and _cpu_has_amx())
    return dtype if use else None


def mem_available_bytes() -> int | None:
    """``MemAvailable`` from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def auto_tile(
    n_rows: int, n_cols: int, dim: int, dtype: torch.dtype = torch.float32,
    budget_bytes: int | None = None,
) -> tuple[int, int]:
    """Block shape (rows, cols) for a tiled pass over an (n_rows x n_cols) logit matrix.

    Two (rows x cols) buffers plus the (rows + cols, dim) converted input blocks must fit in
    ``budget_bytes`` (default: 160 MiB, or 1/16 of the available memory if that is less). Edges are
    multiples of 256 in [256, 8192], so each block is a large, efficient matrix product.
    """
    if budget_bytes is None:
        avail = mem_available_bytes()
        budget_bytes = DEFAULT_BUDGET if avail is None else min(DEFAULT_BUDGET, avail // 16)
    e = torch.finfo(dtype).bits // 8
    # 2 e t^2 + 2 e dim t <= budget  ->  t = positive root
    t = (-dim + math.sqrt(dim * dim + 4 * budget_bytes / (2 * e))) / 2
    edge = max(256, min(MAX_EDGE, int(t) // 256 * 256))
    tr = min(n_rows, edge)
    # a short block of rows may take wider columns within the same budget
    tc = max(edge, (edge * edge) // max(tr, 1) // 256 * 256)
    return tr, min(n_cols, tc, MAX_EDGE * 4)


class PairMask:
    """False negatives in global coordinates: a dense (N, N) bool tensor or labels (N,).

    ``block(r0, r1, c0, c1)`` returns the (r1 - r0, c1 - c0) bool block (True = excluded), with the
    positives (global row index == global column index) always cleared.
    """

    def __init__(self, dense: Tensor | None = None, labels: Tensor | None = None) -> None:
        self.dense, self.labels = dense, labels

    def block(self, r0: int, r1: int, c0: int, c1: int) -> Tensor:
        if self.dense is not None:
            m = self.dense[r0:r1, c0:c1].clone()
        else:
            m = self.labels[r0:r1, None] == self.labels[None, c0:c1]  # (r, c)
        m.diagonal(r0 - c0).fill_(False)
        return m

    def to(self, device: torch.device) -> PairMask:
        return PairMask(
            None if self.dense is None else self.dense.to(device),
            None if self.labels is None else self.labels.to(device),
        )


def make_mask(mask: Tensor | None, labels: Tensor | None, n: int, fn: str) -> PairMask | None:
    """Validate ``mask`` (n, n) bool / ``labels`` (n,) for ``fn`` and wrap them in a PairMask."""
    if mask is not None and labels is not None:
        raise ValueError(f"{fn}: give either mask= (B, B) bool or labels= (B,), not both")
    if mask is not None:
        if mask.dtype != torch.bool or tuple(mask.shape) != (n, n):
            raise ValueError(
                f"{fn}: mask must be a ({n}, {n}) bool tensor (True = false negative), got "
                f"{mask.dtype} {tuple(mask.shape)}; for per-sample classes pass labels= (B,)"
            )
        return PairMask(dense=mask)
    if labels is not None:
        if labels.dim() != 1 or labels.shape[0] != n or labels.is_floating_point():
            raise ValueError(
                f"{fn}: labels must be a ({n},) integer tensor, got {labels.dtype} "
                f"{tuple(labels.shape)}"
            )
        return PairMask(labels=labels)
    return None
