"""tIoU, NMS, Soft-NMS and ActivityNet-style AP / mAP on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from modalab.video.localization import (
    average_precision, interpolated_ap, mean_average_precision, nms, soft_nms, tiou, tiou_matrix,
)


def P(video, start, end, score, label=0):
    return {"video": video, "label": label, "start": start, "end": end, "score": score}


def G(video, start, end, label=0):
    return {"video": video, "label": label, "start": start, "end": end}


def test_tiou_values():
    np.testing.assert_allclose(tiou((0, 10), [[0, 10], [5, 15], [10, 20], [2, 4], [-5, 5]]),
                               [1.0, 5 / 15, 0.0, 0.2, 5 / 15])
    np.testing.assert_allclose(tiou_matrix([[0, 2], [1, 3]], [[0, 2]]), [[1.0], [1 / 3]])


def test_nms_hand_case():
    segs = np.array([[0, 10], [1, 11], [20, 30], [5, 15], [21, 29]])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95])
    # order: 4 (0.95), 0, 1 (IoU .818 with 0 -> drop), 2 (IoU .8 with 4 -> drop), 3 (IoU .333 keep)
    np.testing.assert_array_equal(nms(segs, scores, 0.5), [4, 0, 3])
    np.testing.assert_array_equal(nms(segs, scores, 0.9), [4, 0, 1, 2, 3])


def test_soft_nms_linear_and_gaussian_values():
    segs = np.array([[0.0, 10.0], [0.0, 5.0], [20.0, 30.0]])
    scores = np.array([0.9, 0.8, 0.3])
    keep, sc = soft_nms(segs, scores, "linear", iou_threshold=0.0)
    # 0 first; 1 decays by (1 - 0.5) -> 0.4; 2 untouched (IoU 0) -> 0.3
    np.testing.assert_array_equal(keep, [0, 1, 2])
    np.testing.assert_allclose(sc, [0.9, 0.4, 0.3])
    keep, sc = soft_nms(segs, scores, "gaussian", sigma=0.5)
    np.testing.assert_allclose(sc, [0.9, 0.8 * np.exp(-0.25 / 0.5), 0.3])
    # linear with a threshold above the overlap leaves scores alone
    _, sc = soft_nms(segs, scores, "linear", iou_threshold=0.6)
    np.testing.assert_allclose(sc, [0.9, 0.8, 0.3])
    # a decayed score can reorder: [0,10] 0.9 ; [0,9] 0.85 -> 0.085 ; [30,40] 0.2
    keep, sc = soft_nms(np.array([[0, 10], [0, 9], [30, 40]]), np.array([0.9, 0.85, 0.2]),
                        "linear")
    np.testing.assert_array_equal(keep, [0, 2, 1])
    np.testing.assert_allclose(sc, [0.9, 0.2, 0.085])
    keep, _ = soft_nms(np.array([[0, 10], [0, 10]]), np.array([0.9, 0.8]), "linear")
    np.testing.assert_array_equal(keep, [0])  # identical segment decays to 0 < min_score


def test_interpolated_ap():
    # precision [1, 0.5, 2/3], recall [.5, .5, 1] -> 0.5 * 1 + 0.5 * 2/3
    assert interpolated_ap(np.array([1, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])) == pytest.approx(
        0.5 + 1 / 3
    )


def test_ap_exact_matches():
    gts = [G("a", 0, 10), G("b", 5, 15)]
    preds = [P("a", 0, 10, 0.9), P("b", 5, 15, 0.8)]
    assert average_precision(preds, gts, 0.5) == pytest.approx(1.0)


def test_ap_duplicates_are_false_positives():
    gts = [G("a", 0, 10)]
    preds = [P("a", 0, 10, 0.9), P("a", 0, 10, 0.8), P("a", 1, 10, 0.7)]
    # TP, FP, FP -> precision 1 at recall 1 -> AP 1
    assert average_precision(preds, gts, 0.5) == pytest.approx(1.0)
    # ranking the duplicate first: the duplicate (higher score) is TP, the exact one FP -> AP 1
    preds = [P("a", 2, 10, 0.95), P("a", 0, 10, 0.9)]
    assert average_precision(preds, gts, 0.5) == pytest.approx(1.0)
    # at tIoU 0.9 the first (0.8 IoU) is FP, the second TP: precision 1/2 at recall 1 -> 0.5
    assert average_precision(preds, gts, 0.9) == pytest.approx(0.5)


def test_ap_misses_and_wrong_video():
    gts = [G("a", 0, 10), G("a", 20, 30), G("b", 0, 10)]
    preds = [P("a", 0, 10, 0.9), P("c", 0, 10, 0.85), P("b", 0, 4, 0.8), P("a", 21, 30, 0.7)]
    # ranks: TP, FP (no GT in video c), FP (IoU .4), TP
    # -> precision [1, .5, 1/3, .5], recall [1/3, 1/3, 1/3, 2/3]
    # interpolated: recall 1/3 -> 1, 2/3 -> .5, missing GT -> 0 ; AP = 1/3 + .5/3
    assert average_precision(preds, gts, 0.5) == pytest.approx(1 / 3 + 0.5 / 3)


def test_ap_greedy_match_to_highest_unmatched_tiou():
    gts = [G("a", 0, 10), G("a", 4, 14)]
    # p1 overlaps GT0 (IoU 1) and GT1 (.43); p2 overlaps GT1 best (IoU .82) then GT0
    preds = [P("a", 0, 10, 0.9), P("a", 4, 13, 0.8)]
    assert average_precision(preds, gts, 0.5) == pytest.approx(1.0)
    # p2 at [0, 9.5]: best is GT0 (taken) -> next GT1 IoU 5.5/14 < .5 -> FP
    preds = [P("a", 0, 10, 0.9), P("a", 0, 9.5, 0.8)]
    assert average_precision(preds, gts, 0.5) == pytest.approx(0.5)
    # with threshold .3 the second falls through to GT1 (IoU .39) -> TP
    assert average_precision(preds, gts, 0.3) == pytest.approx(1.0)


def test_ap_ties_keep_input_order():
    gts = [G("a", 0, 10)]
    fp_first = [P("a", 50, 60, 0.5), P("a", 0, 10, 0.5)]
    tp_first = [P("a", 0, 10, 0.5), P("a", 50, 60, 0.5)]
    assert average_precision(fp_first, gts, 0.5) == pytest.approx(0.5)
    assert average_precision(tp_first, gts, 0.5) == pytest.approx(1.0)


def test_map_keys_and_class_average():
    gts = [G("a", 0, 10, label=0), G("a", 20, 30, label=1), G("a", 40, 50, label=2)]
    preds = [
        P("a", 0, 10, 0.9, label=0),  # class 0: AP 1 at every threshold
        P("a", 20, 28, 0.9, label=1),  # class 1: IoU 0.8 -> TP up to 0.7 (and 0.8)
        P("a", 40, 45, 0.9, label=2),  # class 2: IoU 0.5 -> TP at 0.3, 0.4, 0.5 only
        P("a", 0, 10, 0.9, label=5),  # class without ground truth: ignored
    ]
    res = mean_average_precision(preds, gts)
    assert list(res) == ["mAP@0.3", "mAP@0.4", "mAP@0.5", "mAP@0.6", "mAP@0.7", "mAP_avg"]
    assert res["mAP@0.3"] == pytest.approx(1.0)
    assert res["mAP@0.5"] == pytest.approx(1.0)
    assert res["mAP@0.6"] == pytest.approx(2 / 3)
    assert res["mAP@0.7"] == pytest.approx(2 / 3)
    assert res["mAP_avg"] == pytest.approx((1 + 1 + 1 + 2 / 3 + 2 / 3) / 5)
    assert mean_average_precision([], gts)["mAP_avg"] == 0.0
    with pytest.raises(ValueError, match="ground_truth"):
        mean_average_precision(preds, [])
