"""The fast paths behind ``feature_bundle``: block autocorrelation, tiling, vectorised YIN pick.

Each is checked against the plain version (per-frame FFT autocorrelation, one untiled pass,
``_parabolic_shift`` over every bin) in float64, and the bundle against librosa in float32.
"""

import librosa
import numpy as np
import pytest
import torch

from modalab.audio import features as A
from modalab.audio.autocorr import blocked_ok, frame_acf, frame_acf_blocked, frame_acf_direct
from modalab.audio.bundle import feature_bundle
from modalab.audio.framing import pad_center
from modalab.audio.pitch import _parabolic_shift, _period_range, _troughs, yin_from_cmndf

SR = 16000


@pytest.mark.parametrize("L,hop,lag,chunk", [(2048, 512, 247, 4096), (2048, 512, 512, 7), (400, 400, 100, 3),
                                             (1024, 256, 200, 50)])
def test_audio_block_acf_equals_per_frame_fft(L, hop, lag, chunk):
    torch.manual_seed(0)
    y = torch.randn(3, 5000, dtype=torch.float64)
    yp = pad_center(y, L)
    ref = frame_acf_direct(yp.unfold(-1, L, hop), lag)  # (B, T, lag + 1)
    out = frame_acf_blocked(yp, L, hop, lag, chunk=chunk)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-9)
    direct = yp.unfold(-1, L, hop)[1, 2]  # one frame by definition
    torch.testing.assert_close(out[1, 2, 5], (direct[:-5] * direct[5:]).sum())


def test_audio_block_acf_rejects_bad_geometry_and_falls_back():
    assert not blocked_ok(1024, 160, 100) and not blocked_ok(2048, 512, 600)
    with pytest.raises(ValueError, match="frame_length % hop"):
        frame_acf_blocked(torch.zeros(1, 4096), 1024, 160, 100)
    y = torch.randn(2, 3000, dtype=torch.float64)
    acf, frames = frame_acf(y, 1024, 160, 100)  # per-frame path
    torch.testing.assert_close(acf, frame_acf_direct(frames, 100))


def test_audio_yin_pick_equals_full_parabolic_shift():
    torch.manual_seed(1)
    d = torch.rand(4, 30, 60, dtype=torch.float64)
    d[0, :, 0] = -1.0  # global minimum at the first bin: no refinement
    d[1, :, -1] = -1.0  # and at the last
    f0, aper = yin_from_cmndf(d, SR, 7, trough_threshold=0.2)
    # reference: the shift computed for every bin, then gathered at the chosen lag
    below = _troughs(d) & (d < 0.2)
    first = below.to(torch.int8).argmax(-1, keepdim=True)
    idx = torch.where(below.any(-1, keepdim=True), first, d.argmin(-1, keepdim=True))
    period = 7 + idx + _parabolic_shift(d).gather(-1, idx)
    torch.testing.assert_close(f0, (SR / period).squeeze(-1))
    torch.testing.assert_close(aper, d.gather(-1, idx).squeeze(-1))


def test_audio_bundle_tiles_do_not_change_results():
    rng = np.random.default_rng(0)
    y = torch.tensor(rng.standard_normal((3, 9000)), dtype=torch.float64)
    y[1] = torch.sin(2 * torch.pi * 220 * torch.arange(9000) / SR)
    whole = feature_bundle(y, SR, tile_frames=10_000)
    for tile in (3, 18, 40):  # time slices of one clip, and several clips per tile
        part = feature_bundle(y, SR, tile_frames=tile)
        for k, v in whole.items():
            torch.testing.assert_close(part[k], v, msg=f"{k}, tile_frames={tile}")
    with pytest.raises(ValueError, match="tile_frames"):
        feature_bundle(y, SR, tile_frames=0)


def test_audio_bundle_float32_matches_librosa():
    t = np.arange(2 * SR) / SR
    rng = np.random.default_rng(3)
    y = np.stack([np.sin(2 * np.pi * 196 * t) + 0.5 * np.sin(2 * np.pi * 392 * t),
                  0.3 * rng.standard_normal(t.size)]).astype(np.float32)
    b = feature_bundle(torch.from_numpy(y), SR)
    refs = {"rms": librosa.feature.rms(y=y), "centroid": librosa.feature.spectral_centroid(y=y, sr=SR),
            "mel": librosa.feature.melspectrogram(y=y, sr=SR), "zcr": librosa.feature.zero_crossing_rate(y)}
    for k, ref in refs.items():
        err = float(np.abs(b[k].numpy() - ref).max())
        assert err < 1e-3 * float(ref.max() - ref.min()), (k, err)
    f0 = b["f0"][0, 4:-4].numpy()
    assert np.all(np.abs(f0 / 196.0 - 1) < 0.01)
    ref_f0 = librosa.yin(y, fmin=65, fmax=2093, sr=SR)
    assert np.abs(b["f0"].numpy()[0] - ref_f0[0]).max() < 0.01 * 196
    assert b["mel"].shape == (2, 128, 2 * SR // 512 + 1) and b["f0"].shape == (2, 2 * SR // 512 + 1)


def test_period_range_of_the_default_pitch_band():
    assert _period_range(SR, 65, 2093, 2048) == (7, 247)


@pytest.mark.parametrize("max_over", ["sample", "batch"])
def test_audio_log_mel_tiles_do_not_change_results(max_over):
    torch.manual_seed(2)
    y = torch.randn(5, 4000, dtype=torch.float64) * torch.tensor([1.0, 1e-3, 0.5, 2.0, 1e-2]).view(-1, 1)
    whole = A.log_mel(y, max_over=max_over, tile_frames=10_000)
    torch.testing.assert_close(A.log_mel(y, max_over=max_over, tile_frames=30), whole)  # 1 clip per tile
    torch.testing.assert_close(A.log_mel(y, max_over=max_over, tile_frames=50), whole)  # 2 clips per tile
