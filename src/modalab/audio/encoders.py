"""A small PANN-like CNN for sound events: frame-level logits and clip-level pooling.

PANNs (Kong et al. 2020) stack conv blocks over a log-mel image, average out frequency, and pool
frame predictions to a clip prediction. Pooling options here:

- ``max``:  clip logit = max over time of frame logits (the chapter's sketch);
- ``mean``: clip logit = mean over time of frame logits;
- ``attention``: decision-level attention, clip prob = sum_t softmax_t(a_t) * sigmoid(c_t), with a
  separate attention head ``a`` and classification head ``c`` (PANNs' ``AttBlock``).

The model returns probabilities for the clip (``clip_prob``) because attention pooling mixes
probabilities, not logits; ``frame_logits`` stay available for detection (frame F1, onsets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU, then 2x2 average pooling in frequency and ``time_pool`` in time."""

    def __init__(self, c_in: int, c_out: int, time_pool: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.time_pool = time_pool

    def forward(self, x: Tensor) -> Tensor:  # (B, C, F, T) -> (B, C', F/2, T/time_pool)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, (2, self.time_pool))


def pool_clip(frame_logits: Tensor, mode: str, att_logits: Tensor | None = None) -> Tensor:
    """Frame -> clip probabilities: (B, T, C) -> (B, C); ``attention`` needs att_logits (B, T, C)."""
    if mode == "max":
        return torch.sigmoid(frame_logits.amax(dim=1))
    if mode == "mean":
        return torch.sigmoid(frame_logits.mean(dim=1))
    if mode == "attention":
        if att_logits is None:
            raise ValueError("pool_clip(mode='attention') needs att_logits")
        w = torch.softmax(att_logits.clamp(-10, 10), dim=1)  # over time
        return (w * torch.sigmoid(frame_logits)).sum(dim=1).clamp(0, 1)
    raise ValueError(f"unknown pooling {mode!r}; expected 'max', 'mean' or 'attention'")


class EventCNN(nn.Module):
    """Log-mel (B, n_mels, T) -> {"frame_logits": (B, T', C), "clip_prob": (B, C)}.

    ``widths`` gives the channels of each ConvBlock; time is downsampled by ``time_pool`` in every
    block but the first, so T' = T // time_pool ** (len(widths) - 1).
    """

    def __init__(self, n_classes: int, n_mels: int = 64, widths: tuple[int, ...] = (16, 32, 64),
                 pooling: str = "attention", time_pool: int = 2, dropout: float = 0.1):
        super().__init__()
        if pooling not in ("max", "mean", "attention"):
            raise ValueError(f"pooling={pooling!r}; expected 'max', 'mean' or 'attention'")
        if n_mels % (2 ** len(widths)) != 0:
            raise ValueError(f"n_mels={n_mels} must be divisible by 2**len(widths)={2 ** len(widths)}")
        chans = (1, *widths)
        self.blocks = nn.ModuleList(
            ConvBlock(chans[i], chans[i + 1], 1 if i == 0 else time_pool) for i in range(len(widths))
        )
        self.bn0 = nn.BatchNorm1d(n_mels)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(widths[-1], n_classes)
        self.attention = nn.Linear(widths[-1], n_classes) if pooling == "attention" else None
        self.pooling = pooling
        self.time_stride = time_pool ** (len(widths) - 1)

    def features(self, mel: Tensor) -> Tensor:
        """(B, n_mels, T) -> frame embeddings (B, T', D)."""
        x = self.bn0(mel).unsqueeze(1)  # (B, 1, F, T)
        for blk in self.blocks:
            x = blk(x)
        x = x.mean(dim=2)  # (B, D, T')  average out frequency
        x = F.max_pool1d(x, 3, 1, 1) + F.avg_pool1d(x, 3, 1, 1)  # PANNs' smoothing
        return self.dropout(x.transpose(1, 2))  # (B, T', D)

    def forward(self, mel: Tensor) -> dict[str, Tensor]:
        h = self.features(mel)
        frame_logits = self.classifier(h)  # (B, T', C)
        att = self.attention(h) if self.attention is not None else None
        return {"frame_logits": frame_logits, "clip_prob": pool_clip(frame_logits, self.pooling, att),
                "embedding": h.mean(dim=1)}
