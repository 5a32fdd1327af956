"""Statistics over seeds checked against scipy and a plain numpy reference."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from modalab.experiment.stats import compare_values, fmt_p, format_table, mean_ci, paired_bootstrap, paired_t_p


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
        "base": {s: 0.80 + 0.01 * (s % 3) for s in range(7)},
        "better": {s: 0.90 + 0.01 * (s % 3) + 0.002 * s for s in range(7)},  # about +0.10 on every seed
        "noise": {s: 0.80 + 0.01 * (s % 3) + (0.02 if s % 2 else -0.021) for s in range(7)},  # +/- around base
    }
    c = compare_values(values, "zeroshot_top1", n_boot=1000)
    d = {(x.a, x.b): x for x in c.diffs}
    best = d[("base", "better")]
    assert best.significant
    assert best.p_perm == pytest.approx(2 / 2**7)  # every seed improves: the smallest exact p
    assert best.p_perm_holm == pytest.approx(min(1.0, 3 * 2 / 2**7))  # smallest of 3 -> times 3
    assert not d[("base", "noise")].significant
    assert best.ci_kind == "paired t"  # no per-item results given
    table = format_table(c)
    assert "not significant at n=7" in table and "MDE at 80% power" in table
    assert "<0.001" not in table
    # three seeds, however consistent, are never significant: the sign-flip p cannot go below 0.25
    c3 = compare_values({"a": {0: 0.8, 1: 0.81, 2: 0.79}, "b": {0: 0.9, 1: 0.915, 2: 0.9}}, "m", n_boot=100)
    assert c3.diffs[0].p_perm == pytest.approx(0.25) and not c3.diffs[0].significant
    # unpaired seeds are left out of the pairing
    c2 = compare_values({"a": {0: 1.0, 1: 2.0}, "b": {1: 2.5, 2: 3.0}}, "m", n_boot=100)
    assert c2.diffs[0].n_pairs == 1 and not c2.diffs[0].significant


def test_compare_uses_the_two_level_bootstrap_when_items_are_saved():
    rng = np.random.default_rng(0)
    values, items = {"a": {}, "b": {}}, {"a": {}, "b": {}}
    for s in range(5):
        ya = (rng.random(200) < 0.8).astype(float)
        yb = np.where(rng.random(200) < 0.1, 1.0, ya)  # b fixes some of a's mistakes
        items["a"][s], items["b"][s] = ya, yb
        values["a"][s], values["b"][s] = ya.mean(), yb.mean()
    c = compare_values(values, "zeroshot_top1", n_boot=500, items=items)
    d = c.diffs[0]
    assert d.ci_kind.startswith("two-level bootstrap")
    assert d.lo < d.diff < d.hi and d.lo > 0
    assert not d.significant  # 5 seeds: the exact sign-flip p is at least 0.0625


def test_fmt_p_never_hides_a_small_p():
    assert fmt_p(0.0625) == "0.0625" and fmt_p(0.25) == "0.250"
    assert fmt_p(0.0004) == "4.00e-04" and fmt_p(float("nan")) == "nan"
