"""Waveform in, features out, inside the model: a log-mel front end and an audio tower.

Models here take raw waveforms ``(B, samples)`` and compute log-mel features batched, on whatever
device the batch lives on, so the data pipeline only decodes and pads audio.

- ``LogMel``: Whisper's log-mel (``features.log_mel``: 16 kHz, n_fft 400, hop 160, floor at the
  per-clip max - 8, (x + 4) / 4), optionally followed by SpecAugment in training mode only.
- ``AudioTower``: front end -> frame encoder ``(B, n_mels, T) -> (B, T', D)`` -> mean over time
  ``(B, D)``; it is the "image" tower of a CLAP-style two-tower model.
- ``CNNFrames``: the PANN-like trunk of ``encoders.EventCNN`` as a frame encoder (its classifier is
  not used).
"""

from __future__ import annotations

from torch import Tensor, nn

from modalab.audio.augment import SpecAugment
from modalab.audio.encoders import EventCNN
from modalab.audio.features import log_mel

HOP = 160  # log_mel's hop at 16 kHz: 100 frames per second


class LogMel(nn.Module):
    """(B, samples) 16 kHz -> (B, n_mels, samples // 160) log-mel; SpecAugment while training.

    Args:
        n_mels: mel bands (Whisper uses 80 or 128; any number works).
        spec_augment: a policy name of ``augment.POLICIES`` ("LB", "LD", "SM", "SS") or None.
        seed: seed of SpecAugment's generator (None: torch's global generator).
    """

    def __init__(self, n_mels: int = 80, spec_augment: str | None = None, seed: int | None = None) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.augment = SpecAugment(spec_augment, seed=seed) if spec_augment else None

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() != 2:
            raise ValueError(f"LogMel expects waveforms (B, samples), got shape {tuple(wave.shape)}")
        mel = log_mel(wave.float(), n_mels=self.n_mels)  # (B, n_mels, T)
        return self.augment(mel) if self.augment is not None else mel


class CNNFrames(nn.Module):
    """EventCNN's conv trunk as a frame encoder: (B, n_mels, T) -> (B, T // time_stride, widths[-1])."""

    def __init__(self, n_mels: int, widths: tuple[int, ...] = (16, 32, 64), time_pool: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.cnn = EventCNN(1, n_mels, tuple(widths), "max", time_pool, dropout)
        self.cnn.classifier = nn.Identity()  # only the trunk is used
        self.dim = widths[-1]

    def forward(self, mel: Tensor) -> Tensor:
        return self.cnn.features(mel)


class AudioTower(nn.Module):
    """Waveform (B, samples) -> clip embedding (B, D): front end, frame encoder, mean over time.

    Args:
        frontend: (B, samples) -> (B, n_mels, T), e.g. :class:`LogMel`.
        encoder: (B, n_mels, T) -> (B, T', D), e.g. ``WhisperStyleEncoder`` or :class:`CNNFrames`;
            its ``dim`` attribute (D) becomes ``self.dim``.
    """

    def __init__(self, frontend: nn.Module, encoder: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder
        self.dim: int | None = getattr(encoder, "dim", None)

    def frames(self, wave: Tensor) -> Tensor:
        """(B, samples) -> (B, T', D) frame features."""
        return self.encoder(self.frontend(wave))

    def forward(self, wave: Tensor) -> Tensor:
        return self.frames(wave).mean(dim=1)  # (B, T', D) -> (B, D)
