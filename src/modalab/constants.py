"""Numbers and numeric conventions defined once and shared by several packages.

- ``TAU_RANGE``: the contrastive temperature range the chapter recommends, [0.01, 0.1]; the
  alignment monitor, the contrastive task's warning, ``modalab doctor`` and the chapter-5 checks
  all read it from here.
- ``acc_dtype``: the dtype a loss accumulates in: float64 if any input is float64, else float32
  (bfloat16 / float16 embeddings accumulate in fp32 so the loss does not lose precision).
"""

from __future__ import annotations

import torch
from torch import Tensor

TAU_RANGE: tuple[float, float] = (0.01, 0.1)


def acc_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (bfloat16 / float16 accumulate in fp32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
