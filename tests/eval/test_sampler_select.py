"""The val rule that picks a sampler setting: point estimate and Wilson lower bound."""

import math

import pytest

from modalab.eval.sampler_select import clears, pick, pick_rule, wilson_lower


def _wilson_by_bisection(p: float, n: int, z: float) -> float:
    """The score interval's lower end from its definition: the p0 < p with (p - p0) / sqrt(p0 (1 - p0) / n) = z."""
    lo, hi = 0.0, p
    for _ in range(200):
        mid = (lo + hi) / 2
        stat = (p - mid) / math.sqrt(max(mid * (1 - mid), 1e-300) / n)
        lo, hi = (mid, hi) if stat > z else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("p,n,conf", [(0.904, 135, 0.9), (0.5, 100, 0.975), (0.99, 270, 0.95),
                                      (0.3, 7, 0.8), (1.0, 50, 0.9)])
def test_wilson_lower_matches_its_definition(p, n, conf):
    from statistics import NormalDist

    z = NormalDist().inv_cdf(conf)
    assert wilson_lower(p, n, conf) == pytest.approx(_wilson_by_bisection(p, n, z), abs=1e-9)


def test_wilson_lower_known_values_and_limits():
    assert wilson_lower(0.5, 100, 0.975) == pytest.approx(0.40383, abs=1e-5)  # the two-sided 95% interval's end
    assert wilson_lower(0.0, 10, 0.9) == 0.0
    assert wilson_lower(0.7, 20, 0.0) == 0.7  # confidence 0: the point estimate
    assert wilson_lower(0.9, 1000, 0.9) > wilson_lower(0.9, 100, 0.9)  # more samples, a tighter bound
    with pytest.raises(ValueError, match="confidence"):
        wilson_lower(0.5, 10, 1.0)
    with pytest.raises(ValueError, match="n=0"):
        wilson_lower(0.5, 0, 0.9)


def test_pick_with_a_bound_refuses_a_noisy_pass():
    rows = [{"class_match": 0.904, "fid": 13.0, "n": 135}, {"class_match": 0.993, "fid": 54.0, "n": 135},
            {"class_match": 1.0, "fid": 116.0, "n": 135}]
    assert pick(rows, 0.9) == 0  # the point estimate clears 0.90
    assert pick(rows, 0.9, confidence=0.9) == 1  # its lower bound (0.87) does not
    assert pick(rows, 0.999, confidence=0.9) == 2  # none clears: the highest class-match
    assert "Wilson" in pick_rule(0.9, 0.9) and "Wilson" not in pick_rule(0.9)
    assert clears(rows[0], 0.9) and not clears(rows[0], 0.9, 0.9) and clears(rows[1], 0.9, 0.9)
    with pytest.raises(ValueError, match="'n'"):
        pick([{"class_match": 0.95, "fid": 1.0}], 0.9, confidence=0.9)
