"""Temporal action localisation: tIoU, NMS, Soft-NMS, and ActivityNet-style AP / mAP.

Segments are (start, end) in seconds, end > start. A prediction is a dict with keys ``video``,
``label``, ``start``, ``end``, ``score``; a ground truth the same without ``score``.

AP at a tIoU threshold (ActivityNet ``compute_average_precision_detection``, used by
ActionFormer): predictions of one class are sorted by score (ties keep input order: a stable
sort), each is matched greedily to the not-yet-matched ground truth of the same video with the
highest tIoU >= threshold (true positive) or else counted a false positive; AP is the area under
the interpolated precision-recall curve (precision made monotone from the right). mAP is the mean
over the classes that have ground truth; a class with ground truth but no prediction scores 0.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal, Mapping, Sequence

import numpy as np

THUMOS_THRESHOLDS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)


def tiou(segment: Sequence[float], segments: np.ndarray) -> np.ndarray:
    """tIoU of one segment (2,) with each of ``segments`` (M, 2): (M,) float64."""
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    s, e = float(segment[0]), float(segment[1])
    inter = np.clip(np.minimum(e, segs[:, 1]) - np.maximum(s, segs[:, 0]), 0.0, None)
    union = (e - s) + (segs[:, 1] - segs[:, 0]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def tiou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise tIoU: a (N, 2), b (M, 2) -> (N, M) float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    return np.stack([tiou(seg, b) for seg in a]) if len(a) else np.zeros((0, len(b)))


def nms(segments: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Hard NMS: indices of kept segments, by descending score (ties: input order).

    A segment is dropped when its tIoU with an already kept one exceeds ``iou_threshold``.
    """
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    for i in order:
        if not keep or tiou(segs[i], segs[keep]).max() <= iou_threshold:
            keep.append(int(i))
    return np.array(keep, dtype=np.int64)


def soft_nms(
    segments: np.ndarray,
    scores: np.ndarray,
    method: Literal["linear", "gaussian"] = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.0,
    min_score: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """Soft-NMS (Bodla et al. 2017): decay instead of dropping.

    Repeatedly take the highest-scoring remaining segment; every other remaining segment's score
    is multiplied by (1 - IoU) if IoU > iou_threshold (linear) or by exp(-IoU^2 / sigma)
    (gaussian). Segments whose score falls below ``min_score`` are removed.
    Returns (indices into the input in selection order (K,), their decayed scores (K,)).
    """
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    s = np.asarray(scores, dtype=np.float64).copy()
    remaining = list(range(len(s)))
    kept, kept_scores = [], []
    while remaining:
        best = max(remaining, key=lambda i: (s[i], -i))  # highest score, ties: earliest
        remaining.remove(best)
        kept.append(best)
        kept_scores.append(s[best])
        if not remaining:
            break
        rem = np.array(remaining)
        ious = tiou(segs[best], segs[rem])
        if method == "linear":
            w = np.where(ious > iou_threshold, 1.0 - ious, 1.0)
        elif method == "gaussian":
            w = np.exp(-(ious**2) / sigma)
        else:
            raise ValueError(f"soft_nms method must be 'linear' or 'gaussian', got '{method}'")
        s[rem] *= w
        remaining = [i for i in remaining if s[i] >= min_score]
    return np.array(kept, dtype=np.int64), np.array(kept_scores, dtype=np.float64)


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the precision-recall curve with precision made non-increasing from the right."""
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def average_precision(
    predictions: Sequence[Mapping], ground_truth: Sequence[Mapping], threshold: float
) -> float:
    """AP of one class at one tIoU threshold (all items are assumed to be of that class)."""
    if not ground_truth:
        return 0.0
    if not predictions:
        return 0.0
    gt_by_video: dict[str, list[int]] = defaultdict(list)
    for j, g in enumerate(ground_truth):
        gt_by_video[str(g["video"])].append(j)
    scores = np.array([float(p["score"]) for p in predictions])
    order = np.argsort(-scores, kind="stable")
    matched = np.zeros(len(ground_truth), dtype=bool)
    tp = np.zeros(len(predictions))
    for rank, i in enumerate(order):
        p = predictions[i]
        cand = gt_by_video.get(str(p["video"]), [])
        if not cand:
            continue
        segs = np.array([[ground_truth[j]["start"], ground_truth[j]["end"]] for j in cand])
        ious = tiou((p["start"], p["end"]), segs)
        for c in np.argsort(-ious, kind="stable"):
            if ious[c] < threshold:
                break
            if matched[cand[c]]:
                continue
            matched[cand[c]] = True
            tp[rank] = 1.0
            break
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(1.0 - tp)
    recall = tp_cum / len(ground_truth)
    precision = tp_cum / (tp_cum + fp_cum)
    return interpolated_ap(precision, recall)


def mean_average_precision(
    predictions: Sequence[Mapping],
    ground_truth: Sequence[Mapping],
    thresholds: Sequence[float] = THUMOS_THRESHOLDS,
) -> dict[str, float]:
    """mAP over the classes in ``ground_truth`` at each tIoU threshold, and their average.

    Returns {"mAP@0.3": ..., ..., "mAP@0.7": ..., "mAP_avg": ...}.
    """
    if not ground_truth:
        raise ValueError("mean_average_precision: ground_truth is empty; nothing to evaluate")
    classes = sorted({g["label"] for g in ground_truth})
    preds_by: dict = defaultdict(list)
    gts_by: dict = defaultdict(list)
    for p in predictions:
        preds_by[p["label"]].append(p)
    for g in ground_truth:
        gts_by[g["label"]].append(g)
    out: dict[str, float] = {}
    for thr in thresholds:
        aps = [average_precision(preds_by[c], gts_by[c], thr) for c in classes]
        out[f"mAP@{thr:g}"] = float(np.mean(aps))
    out["mAP_avg"] = float(np.mean([out[f"mAP@{t:g}"] for t in thresholds]))
    return out
