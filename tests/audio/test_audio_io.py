import numpy as np
import pytest
import soundfile as sf

from modalab.audio import io

SR = 16000


@pytest.fixture
def tone():
    t = np.arange(SR // 2) / SR
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_audio_io_reads_formats_and_mixes_mono(tmp_path, tone, fmt):
    stereo = np.stack([tone, 0.5 * tone], axis=1)
    p = tmp_path / f"x.{fmt}"
    sf.write(p, stereo, SR)
    y, sr = io.load(p, sr=SR)
    assert sr == SR and y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(tone)) <= (0 if fmt != "ogg" else 64)
    if fmt != "ogg":  # lossless: the mono mix is the channel mean
        np.testing.assert_allclose(y, 0.75 * tone, atol=1e-4)


def test_audio_io_resample_and_pad_or_trim(tmp_path, tone):
    p = tmp_path / "a.wav"
    sf.write(p, tone, 8000)
    y, sr = io.load(p, sr=16000)
    assert sr == 16000 and len(y) == 2 * len(tone)
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * 16000 / len(y) - 220) < 3  # a 440 Hz tone at 8 kHz read as 16 kHz = 220 Hz
    y2, _ = io.load(p, sr=None, length=1000)
    assert len(y2) == 1000
    y3, _ = io.load(p, sr=None, length=len(tone) + 50)
    assert len(y3) == len(tone) + 50 and np.all(y3[-50:] == 0)


def test_audio_io_normalisation(tmp_path, tone):
    p = tmp_path / "a.wav"
    sf.write(p, tone * 0.1, SR, subtype="FLOAT")
    y, _ = io.load(p, normalize="peak")
    assert abs(np.abs(y).max() - 0.99) < 1e-5
    y, _ = io.load(p, normalize="loudness")
    assert abs(20 * np.log10(np.sqrt(np.mean(y ** 2))) + 20.0) < 1e-3


def test_audio_io_errors_name_file_and_problem(tmp_path, tone):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00not really a wav file")
    with pytest.raises(io.AudioError, match=r"corrupt\.wav: cannot decode"):
        io.load(corrupt)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(io.AudioError, match=r"empty\.wav: empty"):
        io.load(empty)
    nan = tmp_path / "nan.wav"
    bad = tone.copy()
    bad[10] = np.nan
    sf.write(nan, bad, SR, subtype="FLOAT")
    with pytest.raises(io.AudioError, match=r"nan\.wav: 1 non-finite"):
        io.load(nan)
    rate = tmp_path / "rate.wav"
    sf.write(rate, tone, 22050)
    with pytest.raises(io.AudioError, match=r"rate\.wav: sample rate 22050 Hz, expected 16000"):
        io.load(rate, expected_sr=16000)
    with pytest.raises(io.AudioError, match="no such file"):
        io.load(tmp_path / "missing.wav")


def test_audio_io_load_many_skips_and_counts(tmp_path, tone):
    good = tmp_path / "good.wav"
    sf.write(good, tone, SR)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage")
    with pytest.raises(io.AudioError, match="bad.wav"):
        io.load_many([good, bad])
    arrays, report = io.load_many([good, bad, good], on_error="skip")
    assert len(arrays) == 2 and report.n_skipped == 1 and str(bad) in report.skipped
