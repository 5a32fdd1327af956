"""Log-mel plus prosody channels (chapter 5.3.1's prosody retention) as one model front end.

    waveform (B, N) -> LogMel (B, M, T) at 100 Hz
                    -> YIN F0 and RMS energy of 40 ms centred frames on the same 10 ms hop
                    -> 2 channels, per clip: relative log-F0 (octaves above the clip's median voiced F0,
                       x ``f0_scale``; 0 where unvoiced) and energy (dB below the clip's loudest frame
                       / 20, floored at -4)
                    -> concatenated: (B, M + 2, T)

The channels are relative to the clip, so a speaker's register and the recording level cancel and
what is left is the contour: a final rise, a louder or higher word.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
from torch import Tensor, nn

from modalab.audio.features import rms_from_frames
from modalab.audio.framing import frame
from modalab.audio.pitch import yin_from_frames

HOP = 160  # LogMel's hop at 16 kHz


def prosody_channels(wave: Tensor, n_frames: int, sr: int = 16000, fmin: float = 65.0, fmax: float = 500.0,
                     f0_scale: float = 4.0, frame_length: int = 640, max_aperiodicity: float = 0.5,
                     silence_db: float = 40.0) -> Tensor:
    """(B, N) -> (B, 2, n_frames): relative log2-F0 and relative energy (see the module docstring).

    A frame is voiced when YIN's aperiodicity (the CMNDF at the chosen trough) is below
    ``max_aperiodicity`` and its energy is within ``silence_db`` of the clip's loudest frame. The
    threshold is looser than ``features.prosody``'s 0.2 because gliding pitch (a question's rise)
    lowers the periodicity inside a 40 ms frame; noise (fricatives) stays near 1.
    """
    frames = frame(wave, frame_length, HOP)  # (B, 1 + N // HOP, L), centred
    f0, aper = yin_from_frames(frames, sr, fmin, fmax)
    energy = 20.0 * torch.log10(rms_from_frames(frames).squeeze(1).clamp_min(1e-5))  # (B, T_p) dB
    rel_e = energy - energy.amax(dim=1, keepdim=True)
    voiced = (aper < max_aperiodicity) & (rel_e > -silence_db)
    logf = torch.log2(f0.clamp_min(1.0))
    median = torch.where(voiced, logf, torch.full_like(logf, float("nan"))).nanmedian(dim=1, keepdim=True).values
    median = torch.nan_to_num(median, nan=0.0)  # a clip with no voiced frame: the channel stays 0
    rel_f0 = torch.where(voiced, (logf - median) * f0_scale, torch.zeros_like(logf))
    ch = torch.stack([rel_f0, (rel_e / 20.0).clamp_min(-4.0)], dim=1)  # (B, 2, T_p)
    if ch.shape[-1] < n_frames:
        ch = torch.nn.functional.pad(ch, (0, n_frames - ch.shape[-1]))
    return ch[..., :n_frames]


class LogMelProsody(nn.Module):
    """(B, samples) -> (B, n_mels + 2, T): a log-mel front end (e.g. ``frontend.LogMel``) and prosody.

    Args:
        logmel: (B, samples) -> (B, n_mels, T); its ``n_mels`` attribute sizes ``self.n_channels``.
        fmin, fmax: YIN's pitch search range in Hz.
        cache_size: keep the channels of up to this many waveforms, keyed by their bytes (0: none).
            The channels have no parameters and each clip's depend on that clip only, so a clip seen
            again (the next epoch) reuses them; a cached batch equals the computed one exactly.
    """

    def __init__(self, logmel: nn.Module, fmin: float = 65.0, fmax: float = 500.0, cache_size: int = 0) -> None:
        super().__init__()
        self.logmel, self.fmin, self.fmax, self.cache_size = logmel, fmin, fmax, cache_size
        self.n_channels = int(getattr(logmel, "n_mels")) + 2
        self._cache: OrderedDict[bytes, Tensor] = OrderedDict()

    def channels(self, wave: Tensor, n_frames: int) -> Tensor:
        """(B, N) -> (B, 2, n_frames), through the cache when ``cache_size`` > 0."""
        if not self.cache_size:
            return prosody_channels(wave, n_frames, fmin=self.fmin, fmax=self.fmax)
        keys = [hashlib.blake2b(w.detach().cpu().numpy().tobytes(), digest_size=16).digest() + bytes([n_frames % 256])
                for w in wave]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            new = prosody_channels(wave[missing], n_frames, fmin=self.fmin, fmax=self.fmax)
            for i, c in zip(missing, new):
                self._cache[keys[i]] = c.cpu()
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        got = [self._cache[k] if k in self._cache else None for k in keys]
        if any(g is None for g in got):  # the batch alone overflowed the cache
            return prosody_channels(wave, n_frames, fmin=self.fmin, fmax=self.fmax)
        return torch.stack(got).to(wave.device)  # (B, 2, n_frames)

    def forward(self, wave: Tensor) -> Tensor:
        mel = self.logmel(wave)  # (B, M, T)
        with torch.no_grad():
            ch = self.channels(wave.float(), mel.shape[-1])
        return torch.cat([mel, ch.to(mel.dtype)], dim=1)  # (B, M + 2, T)
