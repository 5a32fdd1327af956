"""FLIP random patch dropout (chapter 5.1.2): encode only a random subset of the patches.

At ratio r each image keeps ``max(1, int(N * (1 - r)))`` of its N patch tokens, chosen by a random
top-k (open_clip's ``PatchDropout``); prefix tokens (the class token) are always kept, and kept
patches stay in their original order. Apply it after the position embeddings, so each kept token
carries its own position. It is the identity in eval mode and at r = 0. FLIP's recipe ends with a
short unmasked fine-tune ("unmasking tuning"): :func:`unmasking_ratio` gives the ratio by step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def num_kept(num_patches: int, ratio: float) -> int:
    """How many of ``num_patches`` patches survive dropout at ``ratio``."""
    return max(1, int(num_patches * (1.0 - ratio)))


def unmasking_ratio(step: int, total_steps: int, ratio: float, unmask_steps: int) -> float:
    """FLIP's schedule: ``ratio`` for 0-based steps [0, total_steps - unmask_steps), then 0 for the
    last ``unmask_steps`` steps (unmasking tuning)."""
    if not 0 <= unmask_steps < total_steps:
        raise ValueError(
            f"unmask_steps={unmask_steps} must be >= 0 and below the {total_steps} training steps"
        )
    return 0.0 if step >= total_steps - unmask_steps else ratio


def keep_indices(
    batch: int, num_patches: int, ratio: float, generator: torch.Generator | None = None, device=None
) -> Tensor:
    """(B, K) sorted indices of the kept patches, K = :func:`num_kept`; uniform without replacement."""
    k = num_kept(num_patches, ratio)
    scores = torch.rand(batch, num_patches, generator=generator, device=device)  # (B, N)
    return scores.topk(k, dim=-1).indices.sort(dim=-1).values  # (B, K)


class PatchDropout(nn.Module):
    """Drop a random share ``ratio`` of patch tokens in training, keeping the prefix tokens.

    forward(x, *aligned): x (B, P + N, D); each tensor in ``aligned`` is (B, P + N, ...) (e.g. RoPE
    angles) and is gathered with the same indices. Returns x (B, P + K, D), or a tuple
    (x, *aligned) when ``aligned`` is given.
    """

    def __init__(self, ratio: float, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"PatchDropout: ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio
        self.num_prefix_tokens = num_prefix_tokens
        self.generator: torch.Generator | None = None  # set for reproducible masks

    def forward(self, x: Tensor, *aligned: Tensor):
        if not self.training or self.ratio == 0.0:
            return (x, *aligned) if aligned else x
        p = self.num_prefix_tokens
        b, n = x.shape[0], x.shape[1] - p
        idx = keep_indices(b, n, self.ratio, self.generator, device=x.device) + p  # (B, K)
        prefix = torch.arange(p, device=x.device).expand(b, p)  # (B, P)
        idx = torch.cat([prefix, idx], dim=1)  # (B, P + K)

        def take(t: Tensor) -> Tensor:
            if t.shape[0] != b:
                t = t.expand(b, *t.shape[1:])
            index = idx.view(b, -1, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:])
            return torch.gather(t, 1, index)  # (B, P + K, ...)

        out = take(x)
        return (out, *(take(t) for t in aligned)) if aligned else out

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, num_prefix_tokens={self.num_prefix_tokens}"
