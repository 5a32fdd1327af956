"""The transformer feed-forward: Linear -> activation (GELU unless injected) -> Linear."""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

Activation = Callable[[Tensor], Tensor]


class Mlp(nn.Module):
    """Linear -> activation (GELU unless ``act`` is given) -> Linear. Shapes: (..., D) -> (..., D)."""

    def __init__(self, dim: int, hidden: int, act: Activation = F.gelu) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))
