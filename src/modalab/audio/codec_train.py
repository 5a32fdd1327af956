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
                log: Callable[[str], None] | None = None, log_every: int = 25, warmup_steps: int = 0,
                init_frames: int = 0, quant_lr_scale: float = 1.0) -> list[float]:
    """Adam on random crops of ``waves`` (N, samples) (``crop`` samples, default all of them,
    rounded down to the codec's hop); with ``quantize=False`` the RVQ is bypassed
    (``codec.autoencode``). ``warmup_steps``: the first steps train the autoencoder with the RVQ
    bypassed, so that the codebooks' k-means initialisation (on their first quantised batch) sees
    trained encoder frames instead of random ones. ``init_frames`` > 0: at the first quantised step
    every level is fitted at once by k-means, residual by residual
    (``ResidualVQ.init_codebooks``), to about that many encoder frames of random training crops;
    0 keeps the lazy per-level start on the first batch that reaches the level. ``quant_lr_scale``:
    the learning rate of the quantised steps is ``lr * quant_lr_scale``. Returns the loss of every
    step."""
    if waves.dim() != 2:
        raise ValueError(f"train_codec: waves of shape {tuple(waves.shape)}; expected (N, samples)")
    if not 0 <= warmup_steps <= steps:
        raise ValueError(f"train_codec: warmup_steps={warmup_steps}; expected 0..steps ({steps})")
    crop = (min(crop or waves.shape[1], waves.shape[1]) // codec.hop) * codec.hop
    if crop < codec.hop:
        raise ValueError(f"train_codec: clips of {waves.shape[1]} samples are shorter than the hop {codec.hop}")
    if init_frames < 0:
        raise ValueError(f"train_codec: init_frames={init_frames}; expected >= 0")
    if not quant_lr_scale > 0:
        raise ValueError(f"train_codec: quant_lr_scale={quant_lr_scale}; expected > 0")
    opt = torch.optim.Adam(codec.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    codec.train()
    losses = []
    for step in range(1, steps + 1):
        rows = torch.randint(0, waves.shape[0], (batch,), generator=g)
        starts = torch.randint(0, waves.shape[1] - crop + 1, (batch,), generator=g)
        x = torch.stack([waves[r, s: s + crop] for r, s in zip(rows.tolist(), starts.tolist())])  # (B, crop)
        if quantize and step == warmup_steps + 1:
            if init_frames:
                _init_codebooks(codec, waves, crop, init_frames, g, log)
            for group in opt.param_groups:
                group["lr"] = lr * quant_lr_scale
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


@torch.no_grad()
def _init_codebooks(codec: AudioCodec, waves: Tensor, crop: int, n_frames: int, g: torch.Generator,
                    log: Callable[[str], None] | None) -> None:
    """k-means start of all RVQ levels on about ``n_frames`` encoder frames of random crops."""
    per_crop = crop // codec.hop
    n = max(1, -(-n_frames // per_crop))
    rows = torch.randint(0, waves.shape[0], (n,), generator=g)
    starts = torch.randint(0, waves.shape[1] - crop + 1, (n,), generator=g)
    x = torch.stack([waves[r, s: s + crop] for r, s in zip(rows.tolist(), starts.tolist())])
    was_training = codec.training
    codec.eval()
    z = torch.cat([codec.encoder(codec._pad(x[i: i + 64])[:, None]).transpose(1, 2) for i in range(0, n, 64)])
    codec.train(was_training)
    norms = codec.quantizer.init_codebooks(z)
    if log is not None:
        log("codebook init on {} frames: mean squared residual {}".format(
            z.shape[0] * z.shape[1], " -> ".join(f"{v:.4g}" for v in norms)))
