"""Training loop and loss of the RVQ codec (``audio/codec.py``), shared by scripts/codec_sweep.py
and the ``audio_tokens_hierarchy`` task.

Loss per batch of random crops ``x`` (B, crop) and reconstructions ``y``:

    wave_weight * waveform_loss(y, x) + stft_weight * multires_stft_loss(y, x) + commitment
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from modalab.audio.codec import AudioCodec
from modalab.audio.codec_metrics import multires_stft_loss, si_snr


def waveform_loss(y: Tensor, x: Tensor) -> Tensor:
    """Mean absolute error (B, samples) -> scalar."""
    return (y - x).abs().mean()


def codec_loss(y: Tensor, x: Tensor, commitment: Tensor, wave_weight: float, stft_weight: float) -> Tensor:
    """The codec's training loss (scalar); the STFT term is skipped at weight 0."""
    loss = wave_weight * waveform_loss(y, x) + commitment
    return loss + stft_weight * multires_stft_loss(y, x) if stft_weight else loss


def train_codec(codec: AudioCodec, waves: Tensor, steps: int, batch: int, lr: float, wave_weight: float,
                stft_weight: float, seed: int = 0, crop: int | None = None, quantize: bool = True,
                log: Callable[[str], None] | None = None, log_every: int = 25, warmup_steps: int = 0) -> list[float]:
    """Adam on random crops of ``waves`` (N, samples) (``crop`` samples, default all of them,
    rounded down to the codec's hop); with ``quantize=False`` the RVQ is bypassed
    (``codec.autoencode``). ``warmup_steps``: the first steps train the autoencoder with the RVQ
    bypassed, so that the codebooks' k-means initialisation (on their first quantised batch) sees
    trained encoder frames instead of random ones. Returns the loss of every step."""
    if waves.dim() != 2:
        raise ValueError(f"train_codec: waves of shape {tuple(waves.shape)}; expected (N, samples)")
    if not 0 <= warmup_steps <= steps:
        raise ValueError(f"train_codec: warmup_steps={warmup_steps}; expected 0..steps ({steps})")
    crop = (min(crop or waves.shape[1], waves.shape[1]) // codec.hop) * codec.hop
    if crop < codec.hop:
        raise ValueError(f"train_codec: clips of {waves.shape[1]} samples are shorter than the hop {codec.hop}")
    opt = torch.optim.Adam(codec.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    codec.train()
    losses = []
    for step in range(1, steps + 1):
        rows = torch.randint(0, waves.shape[0], (batch,), generator=g)
        starts = torch.randint(0, waves.shape[1] - crop + 1, (batch,), generator=g)
        x = torch.stack([waves[r, s: s + crop] for r, s in zip(rows.tolist(), starts.tolist())])  # (B, crop)
        if quantize and step > warmup_steps:
            y, _, aux = codec(x)
            commitment = aux["loss"]
        else:
            y, commitment = codec.autoencode(x), x.new_zeros(())
        loss = codec_loss(y, x, commitment, wave_weight, stft_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log is not None and (step % log_every == 0 or step == 1):
            log(f"codec step {step} loss {losses[-1]:.4f} batch SI-SNR {float(si_snr(y.detach(), x).mean()):.2f} dB")
    return losses
