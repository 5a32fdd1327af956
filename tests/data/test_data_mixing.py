"""Scheduled data mixing: proportions follow the schedule, draws are reproducible."""

import math

import pytest

from modalab.data.mixing import MixtureSampler, MixtureSchedule, mix


def _schedule(**kw):
    return MixtureSchedule([(0.0, {"understand": 3, "generate": 1}), (0.5, {"understand": 1, "generate": 1})], **kw)


def test_weights_piecewise_and_interpolated():
    s = _schedule()
    assert s.weights_at(0.0) == {"generate": 0.25, "understand": 0.75}
    assert s.weights_at(0.49)["understand"] == 0.75
    assert s.weights_at(0.5)["understand"] == 0.5 and s.weights_at(1.0)["understand"] == 0.5
    lin = MixtureSchedule([(0.0, {"a": 1, "b": 0}), (0.5, {"a": 0, "b": 1})], interpolate=True)
    assert math.isclose(lin.weights_at(0.25)["a"], 0.5)


def test_realised_proportions_follow_schedule_within_sampling_error():
    total, n = 400, 8
    sampler = MixtureSampler(_schedule(), total_steps=total, seed=0)
    for step in range(total):
        sampler.choose(step, n)
    for phase, p in ((0, 0.75), (1, 0.5)):
        share = sampler.realised(phase)["understand"]
        draws = total // 2 * n
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / draws)
    assert abs(sampler.realised()["understand"] - 0.625) < 0.03
    log = sampler.log(total - 1)
    assert log["mix/target/understand"] == 0.5 and "mix/realised/generate" in log
    assert log["mix/realised_phase/understand"] == sampler.realised(1)["understand"]


def test_reproducible_under_seed_and_independent_of_history():
    a = MixtureSampler(_schedule(), 100, seed=7)
    b = MixtureSampler(_schedule(), 100, seed=7)
    seq_a = [a.choose(s, 4) for s in range(100)]
    seq_b = [b.choose(s, 4) for s in range(100)]
    assert seq_a == seq_b
    c = MixtureSampler(_schedule(), 100, seed=7)  # resumed at step 60
    assert [c.choose(s, 4) for s in range(60, 100)] == seq_a[60:]
    d = MixtureSampler(_schedule(), 100, seed=8)
    assert [d.choose(s, 4) for s in range(100)] != seq_a


def test_mix_cycles_sources_and_validates():
    sampler = MixtureSampler(MixtureSchedule.constant({"x": 1, "y": 1}), 50, seed=0)
    out = list(mix({"x": [1, 2], "y": "ab"}, sampler, 50))
    assert len(out) == 50 and {n for n, _ in out} == {"x", "y"}
    xs = [v for n, v in out if n == "x"]
    assert xs[:4] == [1, 2, 1, 2][: len(xs[:4])]
    with pytest.raises(ValueError, match="mixing.py.*not given"):
        list(mix({"x": [1]}, sampler, 1))
    with pytest.raises(ValueError, match="phase starts"):
        MixtureSchedule([(0.2, {"a": 1})])
    with pytest.raises(ValueError, match="every source"):
        MixtureSchedule([(0.0, {"a": 1}), (0.5, {"b": 1})])
