"""Region-phrase pairs of a batch (``meta["boxes"]`` and ``meta["phrases"]`` of each sample, as
``data/sources/digit_scenes.py`` writes them), collated with padding and a mask.

Identical phrases in a batch are tokenized once: ``phrase_index`` points into the batch's
distinct phrases, so that two regions described by the same words ("a small red 3" in two
scenes) share an index and the loss can drop them from each other's negatives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from modalab.data.sample import Sample


@dataclass
class RegionBatch:
    """boxes: (B, R, 4) float pixel boxes ``(x0, y0, x1, y1)``, exclusive ends, zero-padded;
    box_mask: (B, R) bool, True = a real box; phrase_tokens: (P, L) int64 tokens of the P distinct
    phrases; phrase_index: (B, R) int64 into them, -1 where padded; phrases: the P strings."""

    boxes: Tensor
    box_mask: Tensor
    phrase_tokens: Tensor
    phrase_index: Tensor
    phrases: list[str]

    def to(self, device: torch.device | str) -> "RegionBatch":
        return RegionBatch(self.boxes.to(device), self.box_mask.to(device), self.phrase_tokens.to(device),
                           self.phrase_index.to(device), self.phrases)


def collate_regions(samples: Sequence[Sample], tokenize: Callable[[list[str]], Tensor]) -> RegionBatch:
    """Pad each sample's boxes to the batch's largest count and tokenize its distinct phrases."""
    per: list[tuple[list, list[str]]] = []
    for s in samples:
        bx, ph = s.meta.get("boxes"), s.meta.get("phrases")
        if bx is None or ph is None:
            raise ValueError(
                f"sample {s.id}: region-phrase contrast needs meta['boxes'] and meta['phrases'] "
                f"(data.source: digit_scenes has them); found meta keys {sorted(s.meta)}"
            )
        if len(bx) != len(ph):
            raise ValueError(f"sample {s.id}: {len(bx)} boxes but {len(ph)} phrases; each box needs its phrase")
        for k, box in enumerate(bx):
            if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
                raise ValueError(f"sample {s.id}: box {k} = {tuple(box)} is not (x0, y0, x1, y1) with x0 < x1, y0 < y1")
        per.append((list(bx), list(ph)))
    r = max(1, max(len(bx) for bx, _ in per))
    b = len(samples)
    boxes = torch.zeros(b, r, 4)
    mask = torch.zeros(b, r, dtype=torch.bool)
    index = torch.full((b, r), -1, dtype=torch.long)
    distinct: dict[str, int] = {}
    for i, (bx, ph) in enumerate(per):
        for k, (box, phrase) in enumerate(zip(bx, ph)):
            boxes[i, k] = torch.tensor([float(v) for v in box])
            mask[i, k] = True
            index[i, k] = distinct.setdefault(phrase, len(distinct))
    phrases = list(distinct)
    tokens = tokenize(phrases) if phrases else torch.zeros(0, 1, dtype=torch.long)
    return RegionBatch(boxes, mask, tokens, index, phrases)
