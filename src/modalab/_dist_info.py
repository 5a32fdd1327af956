"""Where this process stands in torch.distributed, for any package (no modalab imports).

``data/``, ``align/`` and ``train/`` all ask "am I distributed, which rank of how many?"; the
answer lives here, below every package, so that none of them imports another for it.
"""

from __future__ import annotations

import torch.distributed as dist


def is_dist() -> bool:
    """True when torch.distributed is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_info(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """(rank, world_size) in ``group``; (0, 1) without a process group."""
    if not is_dist():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)
