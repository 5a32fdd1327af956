"""Jackknife per-item values for corpus metrics (eval/jackknife.py) against plain references."""

import numpy as np
import pytest

from modalab.eval.caption_events import event_scores
from modalab.eval.jackknife import (caption_event_counts, jackknife_values, map_values, micro_f1,
                                    micro_f1_values)
from modalab.eval.tagging import mean_average_precision


def test_jackknife_of_a_mean_gives_back_the_items():
    x = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.5])
    psi = jackknife_values(lambda keep: float(x[keep].mean()), len(x))
    np.testing.assert_allclose(psi, x, atol=1e-12)


def test_map_values_average_to_map_and_match_leave_one_out_by_hand():
    rng = np.random.default_rng(0)
    target = (rng.random((30, 4)) < 0.4).astype(int)
    target[0, :] = 1  # every class has a positive
    score = rng.random((30, 4)) + 0.5 * target
    psi = map_values(target, score)
    theta = mean_average_precision(target, score)[0]
    assert psi.shape == (30,) and psi.mean() == pytest.approx(theta, abs=1e-12)
    loo = np.array([mean_average_precision(np.delete(target, i, 0), np.delete(score, i, 0))[0] for i in range(30)])
    np.testing.assert_allclose(psi, theta + 29 * (loo.mean() - loo), atol=1e-12)
    # the variance of their mean is (N - 1) / N times the jackknife variance
    jack_var = 29 / 30 * np.sum((loo - loo.mean()) ** 2)
    assert psi.var() / 30 == pytest.approx(29 / 30 * jack_var, rel=1e-9)


def test_micro_f1_closed_form_matches_the_leave_one_out_reference():
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 3, size=(25, 3))
    counts[3] = (0, 0, 0)  # an item with nothing mentioned and nothing expected
    counts[4] = (2, 0, 0)

    def f1(keep):
        tp, fp, fn = counts[keep].sum(0)
        return micro_f1(tp, fp, fn)

    fast = micro_f1_values(counts)
    np.testing.assert_allclose(fast, jackknife_values(f1, len(counts)), atol=1e-12)
    assert fast.mean() == pytest.approx(f1(np.arange(25)), abs=1e-12)


def test_micro_f1_values_when_one_item_holds_every_true_positive():
    counts = np.array([[3, 0, 0], [0, 1, 1], [0, 0, 2]])  # leaving item 0 out gives F1 0
    ref = jackknife_values(lambda k: micro_f1(*counts[k].sum(0)), 3)
    np.testing.assert_allclose(micro_f1_values(counts), ref, atol=1e-12)


def test_caption_counts_sum_to_event_scores():
    classes = ("beep", "chirp", "bark")
    caps = ["a beep, then a chirp", "a bark", "silence", "a chirp over a bark"]
    evs = [[{"label": "beep", "onset": 0.0}, {"label": "chirp", "onset": 1.0}], [{"label": "beep", "onset": 0.2}],
           [], [{"label": "chirp", "onset": 0.1}]]
    counts = caption_event_counts(caps, evs, classes)
    assert counts.tolist() == [[2, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 0]]
    assert micro_f1(*counts.sum(0)) == pytest.approx(event_scores(caps, evs, classes)["event_f1"])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"\(N >= 2, 3\)"):
        micro_f1_values(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="two \\(N, C\\) arrays"):
        map_values(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="2 captions but 1"):
        caption_event_counts(["a", "b"], [[]], ("beep",))
    with pytest.raises(ValueError, match="at least 2 items"):
        jackknife_values(lambda k: 0.0, 1)
