"""FID / KID / precision-recall: closed forms, plain float64 references, hand-built point sets."""

import numpy as np
import pytest
import scipy.linalg
import torch

from modalab.eval.generation import (
    feature_stats, fid, frechet_distance, generation_scores, kid, mmd2_unbiased, precision_recall, real_floor,
)


def _random_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _fid_reference(mu1, s1, mu2, s2):
    """The textbook formula with scipy's sqrtm on the (non-symmetric) product, float64."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        assert np.abs(covmean.imag).max() < 1e-6  # only round-off may be imaginary
        covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_closed_form_fid_of_two_gaussians():
    # diagonal covariances: FID = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-10)
    # same Gaussian: zero; scaled covariance c^2 S vs S: tr S (c - 1)^2
    s = _random_cov(np.random.default_rng(0), 5)
    assert frechet_distance(mu1[:1].repeat(5), s, mu1[:1].repeat(5), s) == pytest.approx(0, abs=1e-9)
    assert frechet_distance(np.zeros(5), 9 * s, np.zeros(5), s) == pytest.approx(4 * np.trace(s), rel=1e-9)


def test_fid_matches_a_plain_scipy_reference_on_random_covariances():
    rng = np.random.default_rng(1)
    for d in (2, 8, 32):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_fid_reference(mu1, s1, mu2, s2), rel=1e-8)


def test_fid_from_samples_uses_mean_and_unbiased_covariance():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 6)), rng.normal(1.0, 2.0, size=(200, 6))
    mu, cov = feature_stats(torch.from_numpy(x).float())
    assert np.allclose(mu, x.astype(np.float32).mean(0), atol=1e-6)
    assert np.allclose(cov, np.cov(x.astype(np.float32), rowvar=False), atol=1e-5)
    ref = _fid_reference(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert fid(x, y) == pytest.approx(ref, rel=1e-8)
    # rank-deficient covariances (N < D) stay finite and non-negative
    assert 0 <= fid(x[:4], y[:4]) < np.inf


def test_real_floor_is_small_for_one_distribution_and_below_a_shifted_one():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 4))
    floor = real_floor(x, seed=0)
    assert 0 <= floor < 0.05
    assert fid(x[:1000], x[1000:] + 1.0) > 3.5  # |shift|^2 = 4


def test_frechet_errors_name_the_problem():
    with pytest.raises(ValueError, match="one dimension"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), -np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        fid(np.full((3, 2), np.nan), np.zeros((3, 2)))


def _mmd_loop(x, y):
    """Plain O(n^2) loop over pairs, float64."""
    d, m, n = x.shape[1], len(x), len(y)
    k = lambda a, b: (float(np.dot(a, b)) / d + 1) ** 3  # noqa: E731
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_mmd_matches_a_pairwise_loop():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(15, 3)), rng.normal(0.5, 1.0, size=(12, 3))
    assert mmd2_unbiased(x, y) == pytest.approx(_mmd_loop(x, y), rel=1e-10)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_otherwise():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    same = kid(x, y, subsets=100, subset_size=100, seed=0)
    assert abs(same["kid"]) < 3 * same["kid_se"] + 1e-4  # unbiased: mean 0 within its error
    assert same["kid_se"] == pytest.approx(same["kid_std"] / 10)
    shifted = kid(x, y + 0.5, subsets=20, subset_size=100, seed=0)
    assert shifted["kid"] > 10 * shifted["kid_se"] > 0
    # one subset holding every point equals the loop reference
    one = kid(x[:20], y[:20], subsets=1, subset_size=20)
    assert one["kid"] == pytest.approx(_mmd_loop(x[:20], y[:20]), rel=1e-10) and one["kid_std"] == 0


def test_precision_recall_on_hand_built_point_sets():
    # real: 8 points on a line at 0..7 (3rd neighbour radius 2 for the middle, 3 at the ends)
    real = np.array([[float(i), 0.0] for i in range(8)])
    # fake: 2 points on the real line and 2 far away -> precision 0.5; the fake points are a cluster
    # far from most real points -> low recall
    fake = np.array([[3.0, 0.5], [4.0, 0.0], [50.0, 0.0], [60.0, 0.0]])
    pr = precision_recall(real, fake, k=3)
    assert pr["precision"] == pytest.approx(0.5)
    # fake 3rd-neighbour radii: [3,.5]->[60,0] ~57.0, [4,0]->[60,0] 56, [50,0]->[3,.5] ~47.0, [60,0]->[3,.5] ~57.0
    # every real point lies within 56 of [4, 0]: recall 1
    assert pr["recall"] == pytest.approx(1.0)
    tight = np.array([[3.0, 0.0], [3.1, 0.0], [3.2, 0.0], [3.3, 0.0]])  # radii 0.3 at most
    assert precision_recall(real, tight, k=3) == {"precision": 1.0, "recall": pytest.approx(1 / 8)}
    with pytest.raises(ValueError, match="k=4"):
        precision_recall(real, fake, k=4)


def test_generation_scores_bundle():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(200, 4)), rng.normal(size=(150, 4))
    s = generation_scores(torch.from_numpy(x), torch.from_numpy(y))
    assert set(s) == {"fid", "kid", "kid_std", "kid_se", "precision", "recall"}
    assert s["fid"] == pytest.approx(fid(x, y)) and 0.8 < s["precision"] <= 1 and 0.8 < s["recall"] <= 1
