"""The codec's linear frame path (issue 18's fix) and the shared training loop (audio/codec_train.py)."""

import math

import pytest
import torch

from modalab.audio.codec import build_codec
from modalab.audio.codec_metrics import si_snr
from modalab.audio.codec_train import train_codec


def _tones(n: int = 16, length: int = 1600, seed: int = 0) -> torch.Tensor:
    """(n, length) sums of three random tones (200-3000 Hz at 16 kHz) plus faint noise, RMS ~0.1."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 16000
    f = 200 + 2800 * torch.rand(n, 3, 1, generator=g)
    ph = 6.28 * torch.rand(n, 3, 1, generator=g)
    x = torch.sin(2 * math.pi * f * t + ph).sum(1) + 0.05 * torch.randn(n, length, generator=g)
    return 0.1 * x / x.pow(2).mean(1, keepdim=True).sqrt()


@pytest.mark.parametrize("linear_skip", [True, False])
def test_codec_shapes_with_and_without_the_linear_path(linear_skip):
    torch.manual_seed(0)
    codec = build_codec(channels=4, strides=(4, 5, 4), dim=16, n_levels=4, codebook_size=16, linear_skip=linear_skip)
    assert (codec.encoder.skip is not None) == linear_skip and (codec.decoder.skip is not None) == linear_skip
    wav = torch.randn(2, 1000) * 0.1
    y, codes, _ = codec(wav, n_q=2)
    assert y.shape == (2, 1000) and codes.shape == (2, 13, 2)
    assert codec.autoencode(wav).shape == (2, 1000)


def test_linear_path_is_centred_on_its_frame():
    """Output sample o of the linear path depends on input samples centred on o (no shift)."""
    torch.manual_seed(0)
    codec = build_codec(channels=4, dim=8, linear_skip=True)
    x = torch.zeros(1, 1, 1600, requires_grad=True)
    for o in (800, 839, 840):
        y = codec.decoder.skip(codec.encoder.skip(x))[0, 0, o]
        (g,) = torch.autograd.grad(y, x)
        nz = torch.nonzero(g[0, 0])[:, 0]
        frame = o // 80  # the frames whose kernels (2 * hop, centred on the frame) cover o
        lo, hi = (frame - 1) * 80 - 40, (frame + 1) * 80 + 119
        assert int(nz.min()) >= lo and int(nz.max()) <= hi
        assert abs((int(nz.min()) + int(nz.max())) / 2 - (frame * 80 + 39.5)) <= 80


def test_unquantised_codec_learns_tones_within_a_small_budget():
    """The check of issue 18 at test size: with the linear path the autoencoder (RVQ bypassed)
    reconstructs tones at positive SI-SNR after 100 steps; the deep stack alone does not."""
    train, held = _tones(32, seed=0), _tones(8, seed=1)
    snr = {}
    for skip in (True, False):
        torch.manual_seed(0)
        codec = build_codec(channels=4, strides=(4, 5, 4), dim=32, n_levels=2, codebook_size=16, linear_skip=skip)
        losses = train_codec(codec, train, steps=100, batch=8, lr=3e-3, wave_weight=100.0, stft_weight=0.0,
                             seed=0, crop=800, quantize=False)
        assert len(losses) == 100 and losses[-1] < losses[0]
        with torch.no_grad():
            snr[skip] = float(si_snr(codec.eval().autoencode(held), held).mean())
    assert snr[True] > 2.0, snr
    assert snr[True] > snr[False] + 5.0, snr


def test_train_codec_quantised_and_its_errors():
    torch.manual_seed(0)
    codec = build_codec(channels=4, dim=8, n_levels=2, codebook_size=8)
    losses = train_codec(codec, _tones(4), steps=3, batch=2, lr=1e-3, wave_weight=1.0, stft_weight=1.0, crop=1200)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    with pytest.raises(ValueError, match="expected \\(N, samples\\)"):
        train_codec(codec, torch.zeros(4), steps=1, batch=1, lr=1e-3, wave_weight=1.0, stft_weight=0.0)
    with pytest.raises(ValueError, match="shorter than the hop 80"):
        train_codec(codec, torch.zeros(2, 40), steps=1, batch=1, lr=1e-3, wave_weight=1.0, stft_weight=0.0)


def test_warmup_steps_bypass_the_rvq_until_they_end():
    torch.manual_seed(0)
    codec = build_codec(channels=4, dim=8, n_levels=2, codebook_size=8)
    train_codec(codec, _tones(4), steps=2, batch=2, lr=1e-3, wave_weight=1.0, stft_weight=0.0, crop=400,
                warmup_steps=2)
    assert not any(bool(lv.initted) for lv in codec.quantizer.levels)  # never quantised
    train_codec(codec, _tones(4), steps=2, batch=2, lr=1e-3, wave_weight=1.0, stft_weight=0.0, crop=400,
                warmup_steps=1)
    assert bool(codec.quantizer.levels[0].initted)  # k-means init on the first quantised batch
    with pytest.raises(ValueError, match="warmup_steps=3"):
        train_codec(codec, _tones(4), steps=2, batch=2, lr=1e-3, wave_weight=1.0, stft_weight=0.0, warmup_steps=3)
