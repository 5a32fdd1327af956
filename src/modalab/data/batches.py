"""Batch types of the tasks whose batches are not ``data.sample.Batch``.

- :class:`EventBatch`: sound-event clips with clip-level targets and reference events (task ``audio_events``).
- :class:`LocBatch` and :func:`collate_long`: long videos with labelled segments (task ``video_localization``).

Each has ``__len__`` (micro-batch splitting) and ``to(device)``; lists travel unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from modalab.data.sample import Sample


@dataclass
class EventBatch:
    """audio (B, samples); clip_targets (B, C); events: the reference events of each clip."""

    ids: list[str]
    audio: Tensor
    clip_targets: Tensor
    events: list[list[dict]]

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> "EventBatch":
        return EventBatch(self.ids, self.audio.to(device), self.clip_targets.to(device), self.events)


@dataclass
class LocBatch:
    """Long videos (B, T, C, H, W), their segments (seconds) and seconds per model step."""

    ids: list[str]
    videos: Tensor
    segments: list[list[dict]]
    seconds_per_step: list[float]

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> "LocBatch":
        return LocBatch(self.ids, self.videos.to(device), self.segments, self.seconds_per_step)


def collate_long(samples: Sequence[Sample]) -> LocBatch:
    return LocBatch([s.id for s in samples], torch.stack([s.media for s in samples]),
                    [s.meta["segments"] for s in samples],
                    [float(s.meta["seconds_per_step"]) for s in samples])
