"""The records that flow through the data pipeline: ``Sample`` (one item) and ``Batch``.

A source yields ``Sample`` objects; ``collate`` stacks them into a ``Batch``. Modalities a sample
does not have are ``None``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor


@dataclass(init=False)
class Sample:
    """One example.

    media: the item's signal, normalised: an image (C, H, W), a waveform (samples,) or a video
    (T, C, H, W), whichever the source yields; text: caption; label: class index or None;
    id: stable identifier (file path and line, or source index); meta: anything else.

    ``image`` is the field's old name (it carried waveforms and videos too): it is still accepted as
    a keyword and readable as an attribute, with a ``DeprecationWarning``.
    """

    id: str
    media: Tensor | None
    text: str | None
    label: int | None
    meta: dict[str, Any]

    def __init__(self, id: str, media: Tensor | None = None, text: str | None = None,
                 label: int | None = None, meta: dict[str, Any] | None = None, *,
                 image: Tensor | None = None) -> None:
        if image is not None:
            if media is not None:
                raise TypeError("Sample takes media= or its old name image=, not both")
            warnings.warn("Sample(image=...) is deprecated: use media=", DeprecationWarning, stacklevel=2)
            media = image
        self.id, self.media, self.text, self.label = id, media, text, label
        self.meta = {} if meta is None else meta

    @property
    def image(self) -> Tensor | None:
        warnings.warn("Sample.image is deprecated: use Sample.media", DeprecationWarning, stacklevel=2)
        return self.media


@dataclass
class Batch:
    """A collated batch.

    images: (B, C, H, W); tokens: (B, L) int64 with 0 = padding; labels: (B,) int64 or None;
    negatives: (B, K, L) int64 tokens of K hard-negative captions per sample, or None;
    regions: region boxes and phrases (``data/region_batch.RegionBatch``) for region-phrase
    contrast, or None.
    """

    ids: list[str]
    images: Tensor | None = None
    texts: list[str] | None = None
    tokens: Tensor | None = None
    labels: Tensor | None = None
    negatives: Tensor | None = None
    regions: Any = None

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> "Batch":
        def mv(t: Tensor | None) -> Tensor | None:
            return t.to(device, non_blocking=True) if t is not None else None

        regions = self.regions.to(device) if self.regions is not None else None
        return Batch(self.ids, mv(self.images), self.texts, mv(self.tokens), mv(self.labels), mv(self.negatives),
                     regions)


def collate(
    samples: Sequence[Sample], tokenize: Callable[[list[str]], Tensor] | None = None
) -> Batch:
    """Stack samples into a :class:`Batch`; ``tokenize`` turns the captions into (B, L) ids."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    images = None
    if samples[0].media is not None:
        images = torch.stack([s.media for s in samples])  # (B, C, H, W)
    texts = [s.text for s in samples] if samples[0].text is not None else None
    tokens = tokenize(texts) if (texts is not None and tokenize is not None) else None
    labels = None
    if all(s.label is not None for s in samples):
        labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    return Batch([s.id for s in samples], images, texts, tokens, labels)
