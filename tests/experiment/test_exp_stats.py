"""Statistics over seeds checked against scipy and a plain numpy reference."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from modalab.experiment.stats import compare_values, format_table, mean_ci, paired_bootstrap, paired_t_p


def test_mean_ci_matches_scipy_t_interval():
    x = [0.91, 0.87, 0.93, 0.89, 0.90]
    m, s, lo, hi = mean_ci(x, 0.95)
    ref = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert m == pytest.approx(np.mean(x)) and s == pytest.approx(np.std(x, ddof=1))
    assert (lo, hi) == pytest.approx(ref, abs=1e-12)
    # three seeds: t_{0.975, 2} = 4.303
    m, s, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert hi - m == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3))
    assert math.isnan(mean_ci([1.0])[2])


def reference_bootstrap(a, b, n_boot, conf, seed):
    """Loop version of the same algorithm with the same random draws."""
    d = np.asarray(b, float) - np.asarray(a, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    means = []
    for row in idx:
        means.append(sum(d[i] for i in row) / len(row))
    means = np.array(means)
    lo, hi = np.quantile(means, [(1 - conf) / 2, (1 + conf) / 2])
    obs = d.mean()
    p = (sum(1 for m in means if abs(m - obs) >= abs(obs) - 1e-12) + 1) / (n_boot + 1)
    return obs, lo, hi, p


def test_paired_bootstrap_matches_reference_on_known_data():
    a = [0.80, 0.82, 0.79, 0.85, 0.81]
    b = [0.84, 0.85, 0.80, 0.90, 0.86]
    got = paired_bootstrap(a, b, n_boot=2000, seed=7)
    ref = reference_bootstrap(a, b, 2000, 0.95, 7)
    assert got == pytest.approx(ref, abs=1e-12)
    assert got[0] == pytest.approx(0.036)
    assert got[1] > 0 and got[3] < 0.05  # every seed improves: CI excludes 0


def test_paired_bootstrap_ci_agrees_with_scipy_bootstrap():
    rng = np.random.default_rng(0)
    a = rng.normal(0.5, 0.05, 60)
    b = a + rng.normal(0.01, 0.02, 60)
    _, lo, hi, _ = paired_bootstrap(a, b, n_boot=20000, seed=1)
    res = sps.bootstrap((b - a,), np.mean, n_resamples=20000, method="percentile",
                        confidence_level=0.95, random_state=np.random.default_rng(2))
    assert lo == pytest.approx(res.confidence_interval.low, abs=1.5e-3)
    assert hi == pytest.approx(res.confidence_interval.high, abs=1.5e-3)


def test_paired_t_matches_scipy():
    a, b = [0.7, 0.72, 0.69], [0.74, 0.73, 0.75]
    assert paired_t_p(a, b) == pytest.approx(sps.ttest_rel(b, a).pvalue)


def test_compare_marks_noise_not_significant():
    values = {
        "base": {0: 0.80, 1: 0.82, 2: 0.81},
        "better": {0: 0.90, 1: 0.915, 2: 0.905},  # +0.10 on every seed
        "noise": {0: 0.83, 1: 0.79, 2: 0.815},  # +/- around base
    }
    c = compare_values(values, "zeroshot_top1", n_boot=4000)
    d = {(x.a, x.b): x for x in c.diffs}
    assert d[("base", "better")].significant
    assert not d[("base", "noise")].significant
    table = format_table(c)
    assert "NOT significant at n=3" in table and "significant" in table
    # unpaired seeds are left out of the pairing
    c2 = compare_values({"a": {0: 1.0, 1: 2.0}, "b": {1: 2.5, 2: 3.0}}, "m", n_boot=100)
    assert c2.diffs[0].n_pairs == 1 and not c2.diffs[0].significant
