"""Parity of modalab.audio.features with librosa (float64 unless said), and pitch accuracy.

Tolerance: max |ours - librosa| < 1e-3 * (feature range over the test batch) for every feature.
"""

import librosa
import numpy as np
import pytest
import torch

from modalab.audio import features as A
from modalab.audio.bundle import feature_bundle
from modalab.audio import pitch as P

SR = 16000


def _signals(n=SR, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    tone = np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 1320 * t)
    chirp = np.sin(2 * np.pi * np.cumsum(np.linspace(100, 3000, n)) / SR)
    return np.stack([rng.standard_normal(n) * 0.3, tone, chirp, tone * (t > 0.5)])


def _close(ours, ref, rel=1e-3):
    ours = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else ours
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    span = max(float(ref.max() - ref.min()), 1e-12)
    err = float(np.abs(ours - ref).max())
    assert err < rel * span, f"max abs err {err} vs range {span}"


def whisper_reference(y: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Whisper's log_mel_spectrogram written with librosa, one clip."""
    stft = librosa.stft(y, n_fft=400, hop_length=160, window="hann", center=True, pad_mode="reflect")
    power = np.abs(stft[..., :-1]) ** 2
    mel = librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels, dtype=np.float64) @ power
    logs = np.log10(np.maximum(mel, 1e-10))
    logs = np.maximum(logs, logs.max() - 8.0)
    return (logs + 4.0) / 4.0


@pytest.mark.parametrize("n_mels", [80, 128])
def test_audio_log_mel_matches_whisper_reference(n_mels):
    y = _signals()
    ref = np.stack([whisper_reference(c, n_mels) for c in y])
    _close(A.log_mel(torch.tensor(y), n_mels), ref)
    ours32 = A.log_mel(torch.tensor(y, dtype=torch.float32), n_mels)
    _close(ours32, ref)
    assert ours32.shape[-1] == y.shape[-1] // 160


def test_audio_log_mel_batch_max_couples_samples():
    y = _signals()
    y[0] *= 1e-3  # a quiet clip next to loud ones
    per_sample = A.log_mel(torch.tensor(y), max_over="sample")
    batch = A.log_mel(torch.tensor(y), max_over="batch")
    _close(per_sample[0], whisper_reference(y[0]))
    logs = np.stack([np.log10(np.maximum(librosa.filters.mel(sr=SR, n_fft=400, n_mels=80) @ (np.abs(
        librosa.stft(c, n_fft=400, hop_length=160, pad_mode="reflect")[..., :-1]) ** 2), 1e-10)) for c in y])
    ref_batch = (np.maximum(logs, logs.max() - 8.0) + 4.0) / 4.0
    _close(batch, ref_batch)
    assert not torch.allclose(per_sample[0], batch[0])  # the quiet clip is floored differently


def test_audio_spectral_features_match_librosa():
    y = _signals()
    yt = torch.tensor(y)
    _close(A.mel_spectrogram(yt, SR), librosa.feature.melspectrogram(y=y, sr=SR))
    _close(A.mfcc(yt, SR), np.stack([librosa.feature.mfcc(y=c, sr=SR) for c in y]))
    _close(A.zero_crossing_rate(yt), librosa.feature.zero_crossing_rate(y))
    _close(A.rms(yt), librosa.feature.rms(y=y))
    _close(A.spectral_centroid(yt, SR), librosa.feature.spectral_centroid(y=y, sr=SR))
    _close(A.spectral_rolloff(yt, SR), librosa.feature.spectral_rolloff(y=y, sr=SR))


def test_audio_features_float32_match_librosa():
    y = _signals().astype(np.float32)
    yt = torch.tensor(y)
    _close(A.mel_spectrogram(yt, SR), librosa.feature.melspectrogram(y=y, sr=SR))
    _close(A.mfcc(yt, SR), np.stack([librosa.feature.mfcc(y=c, sr=SR) for c in y]))
    _close(A.spectral_centroid(yt, SR), librosa.feature.spectral_centroid(y=y, sr=SR))


def test_audio_feature_bundle_equals_single_features():
    y = torch.tensor(_signals())
    b = feature_bundle(y, SR)
    torch.testing.assert_close(b["mel"], A.mel_spectrogram(y, SR))
    torch.testing.assert_close(b["mfcc"], A.mfcc(y, SR))
    torch.testing.assert_close(b["zcr"], A.zero_crossing_rate(y))
    torch.testing.assert_close(b["rms"], A.rms(y))
    torch.testing.assert_close(b["centroid"], A.spectral_centroid(y, SR))
    torch.testing.assert_close(b["rolloff"], A.spectral_rolloff(y, SR))
    torch.testing.assert_close(b["f0"], P.yin(y, 65.0, 2093.0, SR))
    assert {v.shape[-1] for v in b.values()} == {y.shape[-1] // 512 + 1}


def test_audio_mel_gradient_matches_float64_finite_differences():
    y = torch.randn(1, 96, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: A.mel_spectrogram(x, SR, n_fft=32, hop_length=16, n_mels=4), (y,),
                                      fast_mode=True)


def test_audio_yin_matches_librosa():
    y = _signals()
    _close(P.yin(torch.tensor(y), 65, 2093, sr=SR), librosa.yin(y, fmin=65, fmax=2093, sr=SR))


@pytest.mark.parametrize("f0", [82.0, 110.0, 196.0, 440.0, 987.0])
@pytest.mark.parametrize("harmonic", [False, True])
def test_audio_yin_within_one_percent(f0, harmonic):
    t = np.arange(SR) / SR
    y = np.sin(2 * np.pi * f0 * t)
    if harmonic:
        y = y + 0.6 * np.sin(2 * np.pi * 2 * f0 * t + 0.3) + 0.4 * np.sin(2 * np.pi * 3 * f0 * t + 1.0)
    est = P.yin(torch.tensor(y, dtype=torch.float32), 65, 2093, sr=SR)[0, 4:-4]  # skip padded edges
    assert torch.all((est / f0 - 1).abs() < 0.01), est


def test_audio_pyin_torch_tracks_pitch_and_voicing():
    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * 150 * t) + 0.5 * np.sin(2 * np.pi * 300 * t)
    y = np.concatenate([tone, np.zeros(SR // 2)]).astype(np.float32)
    f0, voiced, prob = P.pyin(torch.tensor(y), 65, 1000, sr=SR)
    assert voiced[0, 4:25].all() and not voiced[0, -8:].any()
    assert torch.all((f0[0, 4:25] / 150 - 1).abs() < 0.01)
    assert torch.isnan(f0[0, -8:]).all() and prob.shape == f0.shape


@pytest.mark.slow
def test_audio_pyin_torch_matches_librosa_pyin():
    rng = np.random.default_rng(0)
    n = 2 * SR
    t = np.arange(n) / SR
    ph = 2 * np.pi * np.cumsum(150 + 50 * np.sin(2 * np.pi * 0.5 * t)) / SR
    y = (np.sin(ph) + 0.4 * np.sin(2 * ph)) * (t < 1.3) + 0.05 * rng.standard_normal(n)
    y = np.stack([y, 0.3 * rng.standard_normal(n)]).astype(np.float32)
    f_r, v_r, p_r = librosa.pyin(y, fmin=65, fmax=2093, sr=SR)
    f_o, v_o, p_o = P.pyin(torch.tensor(y), 65, 2093, sr=SR)
    np.testing.assert_allclose(p_o.numpy(), p_r, atol=1e-5)
    assert (v_o.numpy() == v_r).mean() > 0.95
    both = v_r & v_o.numpy()
    assert np.all(np.abs(f_o.numpy()[both] / f_r[both] - 1) < 0.01)


def test_audio_frame_pyramid_scales():
    y = torch.randn(2, 5 * SR)
    pyr = A.frame_pyramid(y, SR)
    assert set(pyr) == {"short", "medium", "long"}
    hops = [pyr[k][1] for k in ("short", "medium", "long")]
    assert hops == sorted(hops) and abs(hops[0] - 0.0125) < 1e-9
    assert all(pyr[k][0].shape[:2] == (2, 64) for k in pyr)
    with pytest.raises(ValueError, match="medium window"):
        A.frame_pyramid(y, SR, windows=(0.025, 0.05, 2.0))


def test_audio_prosody_rate_and_voicing():
    t = np.arange(2 * SR) / SR
    gate = (np.sin(2 * np.pi * 4 * t) > 0.3).astype(float)  # 4 bursts per second
    y = np.sin(2 * np.pi * 200 * t) * gate + 1e-4 * np.random.default_rng(0).standard_normal(len(t))
    p = A.prosody(torch.tensor(y, dtype=torch.float32).unsqueeze(0), SR)
    assert abs(float(p["rate"][0]) - 4.0) <= 0.5
    assert 0.25 < float(p["voiced_ratio"][0]) < 0.55
    voiced_f0 = p["f0"][0][p["f0"][0] > 0]
    assert torch.all((voiced_f0 / 200 - 1).abs() < 0.02)
