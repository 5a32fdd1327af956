"""The localisation source's validation split, and targets <-> segments on its real videos."""

from __future__ import annotations

import pytest

from modalab.data.sources.moving_digits import MovingDigitsLongConfig, build_moving_digits_long
from modalab.models.temporal_localizer import decode_segments, localization_targets
from modalab.video.localization import mean_average_precision


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    cfg = MovingDigitsLongConfig(
        source="moving_digits_long", cache_dir=str(tmp_path_factory.mktemp("long")), num_videos=12,
        total_frames=48, size=32, fps=8, frame_stride=2, test_fraction=0.25, val_fraction=0.2,
    )
    return build_moving_digits_long(cfg, seed=0)


def _ids(dataset):
    return [dataset[i].id for i in range(len(dataset))]


def test_val_split_is_carved_from_train(splits):
    train, val, test = _ids(splits.train), _ids(splits.val), _ids(splits.test)
    assert (len(train), len(val), len(test)) == (7, 2, 3)  # 12 -> 9 train + 3 test; 20% of 9 -> 2
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert len(set(train) | set(val) | set(test)) == 12


def test_perfect_targets_decode_to_the_ground_truth(splits):
    """Segments (seconds) -> step targets -> a perfect model's outputs -> the same segments, mAP 1."""
    preds, gts = [], []
    for i in range(len(splits.val)):
        s = splits.val[i]
        sps = s.meta["seconds_per_step"]
        assert sps == pytest.approx(2 / 8) and s.media.shape[0] == 24  # stride 2 of 48 frames
        segs = [(g["start"] / sps, g["end"] / sps, g["label"]) for g in s.meta["segments"]]
        cls, off = localization_targets(segs, s.media.shape[0], 8)
        assert cls.sum(-1).max() <= 1  # one label per step
        preds += decode_segments(cls * 40 - 20, off, sps, s.id, score_threshold=0.5, method="hard")
        gts += [{"video": s.id, "label": g["label"], "start": g["start"], "end": g["end"]}
                for g in s.meta["segments"]]
    got = sorted((p["video"], p["label"], round(p["start"], 6), round(p["end"], 6)) for p in preds)
    want = sorted((g["video"], g["label"], g["start"], g["end"]) for g in gts)
    assert got == want
    assert mean_average_precision(preds, gts)["mAP_avg"] == pytest.approx(1.0)
