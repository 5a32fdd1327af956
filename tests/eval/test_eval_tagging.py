import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from modalab.eval.tagging import (average_precision, decode_events, frame_f1, mean_average_precision,
                                  onset_f1)


def test_eval_tagging_ap_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.random(50) < 0.3
        t[0] = True
        s = np.round(rng.random(50), 1)  # many ties
        assert average_precision(t, s) == pytest.approx(average_precision_score(t, s), abs=1e-12)


def test_eval_tagging_map_macro_skips_empty_classes():
    rng = np.random.default_rng(1)
    t = (rng.random((40, 5)) < 0.3).astype(int)
    t[:, 4] = 0
    s = rng.random((40, 5))
    m, aps = mean_average_precision(t, s)
    assert np.isnan(aps[4])
    assert m == pytest.approx(np.mean([average_precision_score(t[:, c], s[:, c]) for c in range(4)]))
    assert mean_average_precision(t[:, :4], t[:, :4].astype(float))[0] == pytest.approx(1.0)


def test_eval_tagging_frame_and_onset_f1():
    target = np.zeros((10, 2))
    target[2:5, 0] = 1
    prob = np.zeros((10, 2))
    prob[3:5, 0] = 0.9
    prob[7, 1] = 0.8
    assert frame_f1(target, prob) == pytest.approx(2 * 2 / (3 + 3))
    est = decode_events(prob, 0.1, ["a", "b"])
    assert est[0] == {"label": "a", "onset": pytest.approx(0.3), "offset": pytest.approx(0.5)}
    ref = [{"label": "a", "onset": 0.2, "offset": 0.5}]
    assert onset_f1([ref], [est], tolerance=0.2) == pytest.approx(2 * 1 / (1 + 2))
    assert onset_f1([ref], [est], tolerance=0.05) == 0.0
    assert onset_f1([ref], [[{"label": "b", "onset": 0.2, "offset": 0.3}]]) == 0.0
