"""Prosody channels: a rising tone reads as rising, level and register cancel, shapes match LogMel."""

import math

import torch

from modalab.audio.frontend import LogMel
from modalab.audio.prosody_frontend import LogMelProsody, prosody_channels

SR = 16000


def glide(f_start: float, f_end: float, seconds: float = 1.0, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    f = f_start + (f_end - f_start) * t / seconds  # linear glide
    phase = 2 * math.pi * torch.cumsum(f, 0) / SR
    return (amp * torch.sin(phase)).unsqueeze(0)


def test_relative_f0_tracks_a_glide_in_octaves():
    ch = prosody_channels(glide(150, 300), 100, f0_scale=1.0)[0]  # (2, 100); an octave up over 1 s
    f0 = ch[0, 10:90]
    # the channel is log2(f / median f): it spans about one octave and rises monotonically overall
    assert 0.7 < float(f0[-5:].mean() - f0[:5].mean()) < 1.0
    assert abs(float(f0.median())) < 0.05


def test_channels_ignore_level_and_register():
    a = prosody_channels(glide(120, 180, amp=0.5), 100)
    b = prosody_channels(glide(240, 360, amp=0.05), 100)  # an octave higher, 20 dB quieter
    assert torch.allclose(a[:, 0, 10:90], b[:, 0, 10:90], atol=0.05)
    assert torch.allclose(a[:, 1, 10:90], b[:, 1, 10:90], atol=0.05)


def test_front_end_shape_and_silence():
    front = LogMelProsody(LogMel(16))
    wave = torch.cat([glide(200, 200, 0.5), torch.zeros(1, 8000)], dim=1).float().repeat(2, 1)
    out = front(wave)
    assert out.shape == (2, 18, LogMel(16)(wave).shape[-1]) and front.n_channels == 18
    assert torch.equal(out[:, :16], LogMel(16)(wave))
    assert float(out[0, 16, -20:].abs().max()) == 0.0  # unvoiced (silent) frames carry no F0
    assert float(out[0, 17, -20:].max()) == -4.0  # energy floored at -80 dB below the loudest frame


def test_cache_equals_recomputing():
    g = torch.Generator().manual_seed(0)
    clips = [glide(100 + 20 * i, 200 + 10 * i, 0.5).float() + 0.01 * torch.randn(1, 8000, generator=g)
             for i in range(5)]
    plain, cached = LogMelProsody(LogMel(16)), LogMelProsody(LogMel(16), cache_size=3)
    for batch in ([0, 1], [1, 2, 3], [0, 4, 1], [2, 3, 4, 0]):  # hits, misses and evictions mixed
        wave = torch.cat([clips[i] for i in batch])
        assert torch.equal(cached(wave), plain(wave))
        assert len(cached._cache) <= 3
