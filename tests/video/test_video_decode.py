"""read_frames (keyframe seek + forward decode) against a full sequential decode."""

from __future__ import annotations

import numpy as np
import pytest

from modalab.video.decode import (
    VideoError, frame_times, index_to_time, probe, read_all, read_frames, time_to_index,
    write_video,
)

T, H, W, FPS, GOP = 90, 32, 48, 15, 10


def _frames(seed: int = 0) -> np.ndarray:
    """A moving square over a gradient plus noise: every frame differs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    out = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        img = np.stack([(xx * 4 + t * 3) % 256, (yy * 6 + t) % 256, np.full_like(xx, 90)], -1)
        img = img + rng.normal(0, 6, img.shape)
        x0 = (t * 2) % (W - 8)
        img[8:16, x0 : x0 + 8] = 250
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module", params=["libx264", "mpeg4"])
def video(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / f"v_{request.param}.mp4"
    write_video(path, _frames(), fps=FPS, codec=request.param, gop=GOP)
    return path, read_all(path)


def test_probe(video):
    path, full = video
    info = probe(path)
    assert info.num_frames == T == len(full)
    assert info.fps == pytest.approx(FPS)
    assert (info.width, info.height) == (W, H)
    assert info.keyframes[0] == 0
    assert set(range(0, T, GOP)) <= set(info.keyframes)
    assert info.duration == pytest.approx(T / FPS)
    assert list(info.pts) == sorted(info.pts)


@pytest.mark.parametrize("skip_nonref", [True, False])
def test_read_frames_equals_sequential_decode(video, skip_nonref):
    path, full = video
    info = probe(path)
    rng = np.random.default_rng(0)
    for trial in range(8):
        k = int(rng.integers(1, 12))
        idx = rng.integers(0, T, size=k).tolist()
        if trial == 0:
            idx = [0, T - 1, 0, T - 1]  # first/last, duplicates
        if trial == 1:
            idx = [T - 1, 5, 5, 44, 43, 0]  # unsorted with duplicates
        out = read_frames(path, idx, info, skip_nonref=skip_nonref)
        assert out.shape == (len(idx), H, W, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, full[idx])


def test_every_frame_and_empty_request(video):
    path, full = video
    np.testing.assert_array_equal(read_frames(path, np.arange(T)), full)
    assert read_frames(path, []).shape == (0, H, W, 3)


def test_sparse_request_decodes_only_needed_gops(video):
    path, full = video
    info = probe(path)
    stats: dict = {}
    idx = [3, 47, 81]
    out = read_frames(path, idx, info, skip_nonref=False, stats=stats)
    np.testing.assert_array_equal(out, full[idx])
    assert stats["seeks"] == 3
    # each run decodes from its keyframe up to the wanted frame (plus decoder reorder delay)
    assert stats["decoded"] <= sum(i - info.keyframe_before(i) + 1 for i in idx) + 3 * 4
    assert stats["decoded"] < T // 2


def test_nearby_frames_share_one_seek(video):
    path, full = video
    info = probe(path)
    stats: dict = {}
    idx = [21, 22, 25, 29]  # one GOP (20..29)
    np.testing.assert_array_equal(read_frames(path, idx, info, stats=stats), full[idx])
    assert stats["seeks"] == 1


def test_time_index_round_trip(video):
    path, _ = video
    info = probe(path)
    for i in [0, 1, 17, T - 1]:
        t = index_to_time(info, i)
        assert t == pytest.approx(i / FPS)
        assert time_to_index(info, t) == i
        assert time_to_index(info, t + 0.5 / FPS) == i
    assert time_to_index(info, -3.0) == 0 and time_to_index(info, 1e6) == T - 1
    np.testing.assert_allclose(frame_times(info, [0, 30]), [0.0, 2.0])


def test_out_of_range_index_names_file(video):
    path, _ = video
    with pytest.raises(IndexError, match=path.name):
        read_frames(path, [0, T])


def test_missing_corrupt_and_unsupported_files(tmp_path):
    with pytest.raises(VideoError, match="nope.mp4"):
        probe(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="junk.mp4"):
        probe(junk)
    with pytest.raises(VideoError, match="junk.mp4"):
        read_all(junk)
    good = write_video(tmp_path / "good.mp4", _frames()[:30], fps=FPS, gop=GOP)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(VideoError, match="cut.mp4"):
        read_frames(cut, [0, 29])
    import soundfile as sf

    wav = tmp_path / "audio.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    with pytest.raises(VideoError, match="no video stream"):
        probe(wav)


def test_write_video_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((4, 16, 16, 3), np.float32))
