"""Frame sampling strategies on hand-made cases, including videos shorter than the request."""

from __future__ import annotations

import numpy as np
import pytest

from modalab.video import sampling as S
from modalab.video.decode import VideoInfo


def _valid(sample: S.FrameSample, n: int) -> None:
    idx = sample.per_clip()
    assert sample.indices.dtype == np.int64
    assert (sample.indices >= 0).all() and (sample.indices < n).all()
    assert (np.diff(idx, axis=1) >= 0).all()  # sorted within each clip
    assert (np.diff(idx[:, 0]) >= 0).all()  # clips ordered by start


def test_uniform_hand_cases():
    np.testing.assert_array_equal(S.uniform(10, 5).indices, [1, 3, 5, 7, 9])
    np.testing.assert_array_equal(S.uniform(100, 4).indices, [12, 37, 62, 87])
    short = S.uniform(3, 6, video_fps=2.0)  # shorter than the request: repeats
    np.testing.assert_array_equal(short.indices, [0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(short.timestamps, [0, 0, 0.5, 0.5, 1, 1])
    _valid(short, 3)


def test_tsn_eval_is_segment_centre():
    # mmaction2 test mode: avg = N / n, offset int(k * avg + avg / 2)
    np.testing.assert_array_equal(S.tsn(30, 3, train=False).indices, [5, 15, 25])
    np.testing.assert_array_equal(S.tsn(10, 4, train=False).indices, [1, 3, 6, 8])
    np.testing.assert_array_equal(S.tsn(2, 4, train=False).indices, [0, 0, 1, 1])


def test_tsn_train_random_within_segments_and_seeded():
    a = S.tsn(100, 8, train=True, seed=3)
    b = S.tsn(100, 8, train=True, seed=3)
    c = S.tsn(100, 8, train=True, seed=4)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    seg = a.indices // 12  # avg interval 100 // 8 = 12: one frame inside each segment
    np.testing.assert_array_equal(seg, np.arange(8))
    _valid(a, 100)
    # frames used over many seeds cover each segment uniformly-ish
    seen = np.concatenate([S.tsn(100, 8, train=True, seed=s).indices for s in range(200)])
    assert len(np.unique(seen)) == 96


@pytest.mark.parametrize("n_frames", [1, 3, 5, 6, 7])
def test_tsn_train_short_videos(n_frames):
    for seed in range(5):
        s = S.tsn(n_frames, 6, train=True, seed=seed)
        assert len(s.indices) == 6
        _valid(s, n_frames)
    # N == n: avg interval 1, offsets 0..5 exactly
    np.testing.assert_array_equal(S.tsn(6, 6, train=True, seed=0).indices, np.arange(6))


def test_dense_slowfast_test_clips():
    s = S.dense(200, clip_len=4, frame_interval=2, num_clips=3, train=False)
    # avg = (200 - 8 + 1) / 3 = 64.33; offsets int(k * avg + avg / 2) = 32, 96, 160
    np.testing.assert_array_equal(
        s.per_clip(), [[32, 34, 36, 38], [96, 98, 100, 102], [160, 162, 164, 166]]
    )
    assert s.clips == 3 and len(s.timestamps) == 12
    _valid(s, 200)


def test_dense_short_video_repeats_last_valid_frame():
    s = S.dense(10, clip_len=8, frame_interval=2, num_clips=1, train=False)
    np.testing.assert_array_equal(s.indices, [0, 2, 4, 6, 8, 8, 8, 8])
    for seed in range(5):
        _valid(S.dense(10, clip_len=8, frame_interval=2, num_clips=2, train=True, seed=seed), 10)


def test_fps_sampling():
    s = S.fps(num_frames=100, video_fps=25.0, rate=5.0)  # 4 s -> 20 frames, every 5th
    np.testing.assert_array_equal(s.indices, np.arange(0, 100, 5))
    np.testing.assert_allclose(s.timestamps, np.arange(20) * 0.2)
    up = S.fps(num_frames=4, video_fps=2.0, rate=4.0)  # faster than the video: repeats
    np.testing.assert_array_equal(up.indices, [0, 0, 1, 1, 2, 2, 3, 3])
    capped = S.fps(100, 25.0, 5.0, max_frames=4)
    assert len(capped.indices) == 4
    _valid(capped, 100)
    np.testing.assert_array_equal(S.fps(30, 30.0, 7.5).indices, [0, 4, 8, 12, 16, 20, 24, 28])


def test_keyframes():
    info = VideoInfo("x.mp4", 100, 25.0, 8, 8, __import__("fractions").Fraction(1, 25),
                     tuple(range(100)), (0, 50), "h264")
    s = S.keyframes(info)
    np.testing.assert_array_equal(s.indices, [0, 50])
    np.testing.assert_allclose(s.timestamps, [0.0, 2.0])


def _scenes(cuts: list[int], total: int, seed: int = 0) -> np.ndarray:
    """Scenes of distinct flat colours with mild noise and slow drift; cuts at ``cuts``."""
    rng = np.random.default_rng(seed)
    palette = [(230, 40, 40), (20, 90, 90), (240, 240, 60), (20, 20, 110), (40, 220, 40)]
    bounds = [0, *cuts, total]
    frames = []
    for k in range(len(bounds) - 1):
        base = np.array(palette[k % len(palette)], dtype=np.float64)
        for t in range(bounds[k + 1] - bounds[k]):
            img = base + t * 0.3 + rng.normal(0, 2, (16, 16, 3))
            frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


def test_hsv_matches_colorsys():
    import colorsys

    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (200, 3)).astype(np.uint8)
    ours = S.rgb_to_hsv_cv(px)
    for (r, g, b), (h, s, v) in zip(px / 255.0, ours):
        hh, ss, vv = colorsys.rgb_to_hsv(r, g, b)
        assert abs(h - (round(hh * 180) % 180)) <= 1 or abs(h - hh * 180) <= 1
        assert abs(s - ss * 255) <= 0.5 + 1e-9 and abs(v - vv * 255) <= 1e-9


@pytest.mark.parametrize("mode", ["merge", "suppress"])
def test_scene_change_finds_known_cuts(mode):
    cuts = [20, 45, 80]
    frames = _scenes(cuts, 100)
    s = S.scene_change(frames, video_fps=10.0, mode=mode)
    np.testing.assert_array_equal(s.indices, [0, *cuts])
    np.testing.assert_allclose(s.timestamps, [0.0, 2.0, 4.5, 8.0])


def test_scene_change_min_scene_len():
    frames = _scenes([20, 25, 60], 80)  # the 5-frame scene is shorter than min_scene_len 15
    sup = S.scene_change(frames, mode="suppress").indices
    np.testing.assert_array_equal(sup, [0, 20, 60])
    assert S.content_scores(frames)[25] >= 27  # the cut is visible in the scores


def test_detect_cuts_flash_filter_hand_case():
    scores = np.zeros(40)
    scores[[10, 13, 30]] = 50.0
    assert S.detect_cuts(scores, 27, 5, "suppress") == [10, 30]
    # merge: 10 is emitted; 13 starts a merge that ends once 5 quiet frames passed, emitting 13
    assert S.detect_cuts(scores, 27, 5, "merge") == [10, 30]
    scores[[20, 22]] = 50.0
    assert S.detect_cuts(scores, 27, 5, "suppress") == [10, 20, 30]


def test_motion_adaptive_concentrates_on_motion():
    rng = np.random.default_rng(0)
    frames = np.full((60, 8, 8, 3), 100, np.uint8)
    frames[40:50] = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)  # motion in 40..50
    s = S.motion_adaptive(frames, 10, video_fps=5.0)
    _valid(s, 60)
    assert ((s.indices >= 40) & (s.indices <= 50)).sum() >= 8
    np.testing.assert_array_equal(s.indices, S.motion_adaptive(frames, 10).indices)
    static = S.motion_adaptive(np.zeros((20, 4, 4, 3), np.uint8), 4)
    np.testing.assert_array_equal(static.indices, S.uniform(20, 4).indices)
    short = S.motion_adaptive(frames[:3], 6)
    assert len(short.indices) == 6
    _valid(short, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_frames"):
        S.uniform(0, 4)
    with pytest.raises(ValueError, match="rate"):
        S.fps(10, 25.0, 0.0)
