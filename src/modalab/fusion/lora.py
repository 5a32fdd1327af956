"""LoRA: a low-rank update ``W + (alpha / r) * B A`` around a frozen ``nn.Linear``.

``A`` (r, in) starts Kaiming-uniform and ``B`` (out, r) starts at zero, so a freshly wrapped layer
computes exactly what the base layer did. ``merge()`` folds the update into the base weight for
inference; ``unmerge()`` takes it out again. ``apply_lora`` swaps matching ``nn.Linear`` children of
any module (e.g. the attention projections of ``text.decoder.TextDecoder``) for wrappers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * dropout(x) A^T B^T``; the base layer is frozen.

    Args:
        base: the linear layer to adapt, (.., in) -> (.., out).
        rank: r, the width of the low-rank update (> 0).
        alpha: scale numerator; the update is multiplied by ``alpha / rank``.
        dropout: dropout on the input of the low-rank path.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 1.0, dropout: float = 0.0):
        super().__init__()
        if rank <= 0:
            raise ValueError(f"fusion/lora.py: rank must be a positive integer, got {rank}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> Tensor:
        """(out, in) update ``scaling * B A``."""
        return self.scaling * (self.lora_b @ self.lora_a)

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        if self.merged:
            return y
        return y + self.scaling * (self.dropout(x) @ self.lora_a.t() @ self.lora_b.t())

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (no extra cost at inference)."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo ``merge()``; training the low-rank factors needs the unmerged form."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


def apply_lora(
    model: nn.Module,
    targets: Sequence[str],
    rank: int,
    alpha: float = 1.0,
    dropout: float = 0.0,
) -> list[str]:
    """Replace every ``nn.Linear`` whose qualified name ends with one of ``targets`` (e.g.
    ``("q_proj", "v_proj")``) by a ``LoRALinear``. Returns the replaced names (sorted).

    Only wraps; freezing the rest of the model is the training stage's job.
    """
    found = [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and any(name.split(".")[-1] == t for t in targets)
    ]
    if not found:
        linears = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        raise ValueError(
            f"fusion/lora.py: no nn.Linear named {list(targets)} in {type(model).__name__}; "
            f"linear layers found: {sorted(linears)}"
        )
    for name in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    return sorted(found)


def lora_modules(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> None:
    for m in lora_modules(model):
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    for m in lora_modules(model):
        m.unmerge()
