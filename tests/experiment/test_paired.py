"""Paired tests over seeds checked against hand enumeration, scipy and simulation."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from modalab.experiment.paired import (
    holm, mde_paired, min_sign_flip_p, paired_t, sign_flip_p, t_interval, t_power, two_level_bootstrap,
)


def enumerate_sign_flip(d):
    """Plain loops over all 2^n sign patterns."""
    obs = abs(sum(d))
    hits = total = 0
    for signs in itertools.product([1, -1], repeat=len(d)):
        total += 1
        hits += abs(sum(s * x for s, x in zip(signs, d))) >= obs - 1e-12
    return hits / total


def test_sign_flip_by_hand():
    # +-1 +-2 +-3: sums 6 4 2 0 0 -2 -4 -6; |sum| >= 6 twice out of 8
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(0.25)
    assert sign_flip_p([1.0, -1.0]) == pytest.approx(1.0)
    for n in (3, 5, 6, 8):  # all differences of one sign: the smallest p, 2 / 2^n
        assert sign_flip_p(np.linspace(0.01, 0.05, n)) == pytest.approx(min_sign_flip_p(n))
    assert min_sign_flip_p(5) == pytest.approx(0.0625) and min_sign_flip_p(6) == pytest.approx(0.03125)
    assert math.isnan(sign_flip_p([]))


@pytest.mark.parametrize("seed", range(4))
def test_sign_flip_matches_enumeration_and_scipy(seed):
    rng = np.random.default_rng(seed)
    d = rng.normal(0.01, 0.03, 8).round(3)
    ours = sign_flip_p(d)
    assert ours == pytest.approx(enumerate_sign_flip(d.tolist()))
    ref = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                               alternative="two-sided")
    assert ours == pytest.approx(ref.pvalue)


def test_sign_flip_monte_carlo_beyond_exact_range():
    d = np.full(24, 0.01)
    p = sign_flip_p(d, n_mc=20000, seed=0)
    assert 0 < p <= 2 / 20001  # the observed pattern is the only extreme one


def test_paired_t_matches_scipy_and_degenerate_cases():
    a, b = [0.7, 0.72, 0.69, 0.71, 0.70], [0.74, 0.73, 0.75, 0.72, 0.74]
    t, p = paired_t(a, b)
    ref = sps.ttest_rel(b, a)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert paired_t([0.5, 0.6], [0.6, 0.7])[1] == 0.0  # identical non-zero differences
    assert paired_t([0.5, 0.6], [0.5, 0.6])[1] == 1.0
    assert math.isnan(paired_t([0.5], [0.6])[1])
    with pytest.raises(ValueError, match="equal length"):
        paired_t([1.0, 2.0], [1.0])


def test_holm_on_known_vectors():
    # sorted 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1, raised to the running max 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = holm([0.02, float("nan"), 0.01])  # NaN is not a test: m = 2
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([]) == []


@pytest.mark.parametrize("seed", range(5))
def test_holm_rejections_follow_the_step_down_rule(seed):
    rng = np.random.default_rng(seed)
    p = rng.random(7) ** 3
    alpha = 0.05
    order = np.argsort(p)
    reject = np.zeros(7, bool)
    for i, j in enumerate(order):  # reject while p_(i) <= alpha / (m - i)
        if p[j] > alpha / (7 - i):
            break
        reject[j] = True
    assert ((np.array(holm(p)) <= alpha) == reject).all()


def test_mde_reaches_the_asked_power():
    for n, sd in [(3, 0.05), (5, 0.02), (10, 0.1)]:
        mde = mde_paired(sd, n)
        assert t_power(mde, sd, n) == pytest.approx(0.8, abs=1e-9)
        assert t_power(0.9 * mde, sd, n) < 0.8
    # large n: the normal approximation (z_{0.975} + z_{0.8}) sd / sqrt(n)
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    assert mde_paired(1.0, 4000) == pytest.approx(z / math.sqrt(4000), rel=2e-3)
    assert mde_paired(0.0, 5) == 0.0 and math.isnan(mde_paired(0.1, 1))


def test_mde_power_by_simulation():
    n, sd = 6, 0.02
    mde = mde_paired(sd, n)
    rng = np.random.default_rng(0)
    d = rng.normal(mde, sd, size=(20000, n))  # (trials, n)
    p = sps.ttest_1samp(d, 0.0, axis=1).pvalue
    assert (p < 0.05).mean() == pytest.approx(0.8, abs=0.015)


def test_two_level_bootstrap_reduces_to_its_levels():
    rng = np.random.default_rng(0)
    # items constant within each seed: the item level adds nothing; the seed-level percentile bootstrap
    per_seed = rng.normal(0.02, 0.01, 6)
    a = [np.zeros(50) for _ in per_seed]
    b = [np.full(50, v) for v in per_seed]
    m, lo, hi = two_level_bootstrap(a, b, n_boot=20000, seed=1)
    idx = np.random.default_rng(2).integers(0, 6, size=(20000, 6))
    ref = np.quantile(per_seed[idx].mean(axis=1), [0.025, 0.975])
    assert m == pytest.approx(per_seed.mean())
    assert (lo, hi) == pytest.approx(tuple(ref), abs=2e-3)
    # one seed: the item bootstrap, close to mean +- 1.96 sd / sqrt(N)
    x = (rng.random(2000) < 0.7).astype(float)
    y = np.where(rng.random(2000) < 0.2, 1.0, x)
    m, lo, hi = two_level_bootstrap([x], [y], n_boot=4000, seed=0)
    half = 1.96 * (y - x).std() / math.sqrt(2000)
    assert (lo, hi) == pytest.approx((m - half, m + half), abs=2e-3)
    # identical arms: no difference at all
    assert two_level_bootstrap([x, x], [x, x], n_boot=100) == (0.0, 0.0, 0.0)


def test_two_level_bootstrap_is_wider_than_either_level_alone():
    rng = np.random.default_rng(3)
    a, b = [], []
    for shift in rng.normal(0.03, 0.02, 5):
        x = (rng.random(300) < 0.75).astype(float)
        a.append(x)
        b.append(np.where(rng.random(300) < 0.12 + shift, 1.0, x))
    m, lo, hi = two_level_bootstrap(a, b, n_boot=4000)
    seed_means = np.array([(y - x).mean() for x, y in zip(a, b)])
    seed_only = np.quantile(seed_means[np.random.default_rng(1).integers(0, 5, (4000, 5))].mean(1), [0.025, 0.975])
    assert hi - lo > seed_only[1] - seed_only[0]
    with pytest.raises(ValueError, match="seed 1"):
        two_level_bootstrap([np.ones(3), np.ones(3)], [np.ones(3), np.ones(4)])


def test_t_interval_matches_scipy():
    d = [0.01, 0.03, -0.005, 0.02, 0.015]
    ref = sps.t.interval(0.95, 4, loc=np.mean(d), scale=sps.sem(d))
    assert t_interval(d) == pytest.approx(ref)
