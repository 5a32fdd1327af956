"""Framing shared by the feature and pitch code: batch checks, librosa's centring, frames.

``frame(y)`` turns ``(B, N)`` audio into ``(B, T, frame_length)`` strided views, T = 1 + N // hop when
centred (librosa's ``center=True`` pads ``frame_length // 2`` on both sides, zeros by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    import numpy as np


def _as_batch(y: Tensor | np.ndarray) -> Tensor:
    y = torch.as_tensor(y)
    if y.dim() == 1:
        y = y.unsqueeze(0)
    if y.dim() != 2:
        raise ValueError(f"expected audio of shape (B, samples) or (samples,), got {tuple(y.shape)}")
    if not y.is_floating_point():
        raise TypeError(f"expected floating-point audio, got dtype {y.dtype}")
    return y


_TORCH_PAD = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}


def pad_center(y: Tensor, frame_length: int, pad_mode: str = "constant") -> Tensor:
    """Pad ``(B, N)`` by ``frame_length // 2`` on both sides (librosa's ``center=True``)."""
    if pad_mode not in _TORCH_PAD:
        raise ValueError(f"pad_mode={pad_mode!r}; expected one of {sorted(_TORCH_PAD)}")
    p = frame_length // 2
    if pad_mode == "constant":
        return F.pad(y, (p, p))
    return F.pad(y.unsqueeze(1), (p, p), mode=_TORCH_PAD[pad_mode]).squeeze(1)


def frame(y: Tensor, frame_length: int = 2048, hop_length: int = 512, center: bool = True,
          pad_mode: str = "constant") -> Tensor:
    """Frames of ``y``: (B, N) -> (B, T, frame_length), T = 1 + N // hop when centred."""
    y = _as_batch(y)
    if center:
        y = pad_center(y, frame_length, pad_mode)
    if y.shape[-1] < frame_length:
        raise ValueError(f"signal of {y.shape[-1]} samples is shorter than frame_length={frame_length}")
    return y.unfold(-1, frame_length, hop_length)  # (B, T, L)
