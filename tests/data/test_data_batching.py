"""Bucketing by aspect ratio, padding share, resolution schedule, multi-scale sizes."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from modalab.data.batching import (
    ResolutionSchedule,
    ResolutionScheduleSpec,
    aspect_bucket,
    bucket_batches,
    collate_padded,
    multiscale_size,
    padded_token_share,
    random_batches,
)
from modalab.data.sources.varres_digits import varres_sizes


def test_aspect_bucket():
    assert aspect_bucket((10, 10)) == aspect_bucket((12, 11))
    assert aspect_bucket((10, 40)) > aspect_bucket((10, 10)) > aspect_bucket((40, 10))


def test_bucket_batches_cover_deterministic_and_homogeneous():
    sizes = varres_sizes(500, seed=0)
    batches = bucket_batches(sizes, 16, seed=1)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500)) and all(len(b) <= 16 for b in batches)
    assert batches == bucket_batches(sizes, 16, seed=1)
    assert batches != bucket_batches(sizes, 16, seed=2)
    assert batches != bucket_batches(sizes, 16, seed=1, epoch=1)
    for b in batches:
        assert len({aspect_bucket(sizes[i]) for i in b}) == 1
    dropped = bucket_batches(sizes, 16, seed=1, drop_last=True)
    assert all(len(b) == 16 for b in dropped)


def test_bucketing_pads_less_than_random():
    sizes = varres_sizes(1000, seed=0, multiple=4)
    rand = padded_token_share(sizes, random_batches(1000, 32, seed=0), 4)
    buck = padded_token_share(sizes, bucket_batches(sizes, 32, seed=0), 4)
    assert buck > 0.5 and buck > 3 * rand  # sizes are log-uniform over 8..64 x 8..160: broad


def test_padded_token_share_reference():
    sizes = [(8, 8), (4, 16), (8, 16)]
    # grids (2,2), (1,4), (2,4): pad to (2,4) -> real 4+4+8 = 16 of 3*8 = 24
    assert padded_token_share(sizes, [[0, 1, 2]], 4) == pytest.approx(16 / 24)
    assert padded_token_share(sizes, [[0], [1], [2]], 4) == 1.0


def test_collate_padded():
    imgs = [torch.ones(1, 5, 7), torch.full((1, 3, 9), 2.0)]
    out, sizes = collate_padded(imgs, multiple=4, fill=-1.0)
    assert out.shape == (2, 1, 8, 12) and sizes == [(5, 7), (3, 9)]
    assert torch.all(out[0, :, :5, :7] == 1) and torch.all(out[0, :, 5:] == -1) and torch.all(out[1, :, :3, :9] == 2)


def test_chapter_schedule_proportions():
    s = ResolutionSchedule.chapter(16, 32, 48)
    assert s.proportions(0.0) == [1.0, 0.0, 0.0] and s.proportions(0.3) == [1.0, 0.0, 0.0]
    assert s.proportions(0.5) == [0.6, 0.3, 0.1] and s.proportions(0.9) == [0.3, 0.4, 0.3]
    assert s.proportions(1.0) == [0.3, 0.4, 0.3]
    total = 6000
    for lo, hi, expect in [(0, 2000, [1.0, 0, 0]), (2000, 4000, [0.6, 0.3, 0.1]), (4000, 6000, [0.3, 0.4, 0.3])]:
        draws = [s.resolution(t, total, seed=0) for t in range(lo, hi)]
        freq = [draws.count(r) / len(draws) for r in (16, 32, 48)]
        assert np.allclose(freq, expect, atol=0.04), (lo, freq)
    assert s.resolution(4000, total, seed=5) == s.resolution(4000, total, seed=5)


def test_assign_exact_counts():
    s = ResolutionSchedule.chapter(16, 32, 48)
    a = s.assign(10, 0.5, seed=0)
    assert sorted(a) == [16] * 6 + [32] * 3 + [48]
    a = s.assign(7, 0.9, seed=0)  # 2.1 / 2.8 / 2.1 -> 2 / 3 / 2
    assert [a.count(r) for r in (16, 32, 48)] == [2, 3, 2]
    assert s.assign(7, 0.9, seed=0) == a


@pytest.mark.parametrize(
    "stages",
    [[(0.5, (1, 0, 0))], [(0.5, (1, 0, 0)), (0.4, (0, 1, 0)), (1.0, (0, 0, 1))], [(1.0, (0.5, 0.6, 0))],
     [(1.0, (1, 0))]],
)
def test_schedule_errors(stages):
    with pytest.raises(ValueError):
        ResolutionSchedule([16, 32, 48], stages)


def test_schedule_spec():
    spec = ResolutionScheduleSpec()
    assert spec.build().proportions(0.5) == [0.6, 0.3, 0.1]
    spec = ResolutionScheduleSpec(resolutions=[8, 16], stages=[{"end": 1.0, "proportions": [0.5, 0.5]}],
                                  multiscale=(0.8, 1.2))
    assert spec.build().resolutions == [8, 16]
    with pytest.raises(ValidationError, match="proportions"):
        ResolutionScheduleSpec(resolutions=[8, 16], stages=[{"end": 1.0, "proportions": [0.5, 0.6]}])
    with pytest.raises(ValidationError, match="extra"):
        ResolutionScheduleSpec(resolution=[8])


def test_multiscale_size():
    sizes = [multiscale_size((40, 80), seed=0, step=t, multiple=4) for t in range(300)]
    assert all(h % 4 == 0 and w % 4 == 0 for h, w in sizes)
    assert all(32 - 2 <= h <= 48 + 2 and 64 - 2 <= w <= 96 + 2 for h, w in sizes)
    assert len(set(sizes)) > 5
    assert multiscale_size((40, 80), seed=0, step=7) == multiscale_size((40, 80), seed=0, step=7)
    assert multiscale_size((2, 2), seed=0, step=0, multiple=4) == (4, 4)
