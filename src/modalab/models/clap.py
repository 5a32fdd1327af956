"""CLAP-style audio-text dual encoder: ``two_tower.TwoTower`` with an audio tower injected.

The "image" tower of :class:`~modalab.models.two_tower.TwoTower` is an
:class:`~modalab.audio.frontend.AudioTower`: waveform (B, samples) -> Whisper log-mel (optional
SpecAugment in training) -> a Whisper-style transformer encoder (conv, conv stride 2, sinusoidal
positions, blocks) or the PANN-like CNN trunk -> mean over time -> (B, width). Everything else —
text transformer, projections, learnable temperature, clamp — is the CLIP model unchanged, so the
contrastive task, its losses and its evaluation run on audio as they do on images (audio plays the
image role: ``encode_image`` embeds audio, ``image_to_text_*`` means audio-to-text retrieval).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from modalab.audio.frontend import HOP, AudioTower, CNNFrames, LogMel
from modalab.audio.whisper_encoder import WhisperStyleEncoder
from modalab.config import Section
from modalab.models.two_tower import DualEncoderConfig, TwoTower, assemble_dual_encoder
from modalab.registry import register


class AudioTowerConfig(Section):
    encoder: Literal["whisper", "cnn"] = "whisper"
    n_mels: int = Field(64, gt=0)
    width: int = Field(128, gt=0, description="whisper: model width")
    depth: int = Field(2, gt=0, description="whisper: transformer blocks")
    heads: int = Field(4, gt=0)
    cnn_widths: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1)
    spec_augment: Literal["none", "LB", "LD", "SM", "SS"] = "none"
    pretrained: str | None = Field(
        None, description="hf:DIR Whisper checkpoint: its encoder (and n_mels) replace encoder/width/depth/heads"
    )


class ClapConfig(DualEncoderConfig):
    audio: AudioTowerConfig = Field(default_factory=AudioTowerConfig)


def build_audio_tower(cfg: AudioTowerConfig, clip_samples: int, seed: int | None = None) -> AudioTower:
    """An AudioTower for clips of ``clip_samples`` 16 kHz samples; ``tower.dim`` is its width."""
    aug = None if cfg.spec_augment == "none" else cfg.spec_augment
    if cfg.pretrained:
        from modalab.models.pretrained.load import load_audio_encoder

        enc, _ = load_audio_encoder(cfg.pretrained)
        frames = clip_samples // HOP + 1
        if frames > 2 * enc.pos.shape[0]:
            raise ValueError(f"{cfg.pretrained}: clips of {frames} mel frames exceed the encoder's "
                             f"{2 * enc.pos.shape[0]}; use shorter clips")
        return AudioTower(LogMel(enc.conv1.in_channels, aug, seed=seed), enc)
    frontend = LogMel(cfg.n_mels, aug, seed=seed)
    if cfg.encoder == "whisper":
        enc: nn.Module = WhisperStyleEncoder(cfg.n_mels, cfg.width, cfg.depth, cfg.heads,
                                             max_frames=clip_samples // HOP + 2)
    else:
        if cfg.n_mels % (2 ** len(cfg.cnn_widths)):
            raise ValueError(f"model.audio.n_mels={cfg.n_mels} must be divisible by "
                             f"2 ** len(model.audio.cnn_widths) = {2 ** len(cfg.cnn_widths)}")
        enc = CNNFrames(cfg.n_mels, tuple(cfg.cnn_widths))
    return AudioTower(frontend, enc)


@register("model", "clap_two_tower", schema=ClapConfig)
def build_clap(cfg: ClapConfig, *, image_size: int, in_channels: int, vocab_size: int) -> TwoTower:
    """CLAP-style dual encoder: audio tower on log-mel + small text transformer.

    ``image_size`` is the clip length in samples for audio sources (audio plays the image role);
    ``in_channels`` must be 1 (mono).
    """
    if in_channels != 1:
        raise ValueError(f"clap_two_tower expects mono audio (channels=1), got {in_channels}; "
                         f"use an audio data source (spoken_digits, audio_folder, sound_events)")
    audio = build_audio_tower(cfg.audio, image_size)
    return assemble_dual_encoder(cfg, audio, audio.dim, vocab_size)
