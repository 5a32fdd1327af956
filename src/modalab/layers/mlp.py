"""The transformer feed-forward: Linear -> activation (GELU unless injected) -> [dropout] ->
Linear -> [dropout]."""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from modalab.layers.state_keys import rename_on_load

Activation = Callable[[Tensor], Tensor]

# Feed-forwards written as ``nn.Sequential(Linear, GELU, Linear[, Dropout])`` stored their weights
# as ``0.*`` and ``2.*``; checkpoints holding those names load into :class:`Mlp`.
SEQUENTIAL_KEYS = {"0.": "fc1.", "2.": "fc2."}


class Mlp(nn.Module):
    """Linear -> activation -> Linear. Shapes: (..., D) -> (..., D).

    Args:
        dim: input and output width; hidden: inner width.
        act: the activation (GELU unless given: CLIP's quick GELU, SigLIP's tanh GELU).
        dropout: dropout after ``fc2``; hidden_dropout: dropout after the activation.
    """

    def __init__(self, dim: int, hidden: int, act: Activation = F.gelu, dropout: float = 0.0,
                 hidden_dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = act
        self.dropout, self.hidden_dropout = dropout, hidden_dropout
        rename_on_load(self, SEQUENTIAL_KEYS)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.fc1(x))
        if self.hidden_dropout:
            h = F.dropout(h, self.hidden_dropout, self.training)
        out = self.fc2(h)
        if self.dropout:
            out = F.dropout(out, self.dropout, self.training)
        return out
