"""Tagging and detection metrics: per-class AP / mAP, frame-level F1, event-onset F1.

- ``average_precision``: sum over distinct score thresholds of (R_n - R_{n-1}) * P_n, the same
  (non-interpolated) definition as ``sklearn.metrics.average_precision_score``.
- ``mean_average_precision``: macro mean over classes with at least one positive (AudioSet mAP).
- ``frame_f1``: micro F1 over all (frame, class) cells after thresholding.
- ``onset_f1``: events decoded from thresholded frame activity, matched one-to-one to reference
  events of the same class whose onset is within ``tolerance`` seconds (DCASE-style onset-only
  event-based F1, micro over classes; 200 ms is the usual collar).
"""

from __future__ import annotations

import numpy as np


def average_precision(target: np.ndarray, score: np.ndarray) -> float:
    """AP of one class: target (N,) in {0, 1}, score (N,). NaN if there is no positive."""
    target = np.asarray(target).astype(bool).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    if target.shape != score.shape:
        raise ValueError(f"average_precision: target {target.shape} and score {score.shape} differ")
    n_pos = int(target.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], target[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct threshold
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(target: np.ndarray, score: np.ndarray) -> tuple[float, np.ndarray]:
    """Macro mAP over classes with positives: target, score (N, C) -> (mAP, per-class AP (C,))."""
    target, score = np.asarray(target), np.asarray(score)
    if target.ndim != 2 or target.shape != score.shape:
        raise ValueError(f"mean_average_precision expects two (N, C) arrays, got {target.shape}, {score.shape}")
    aps = np.array([average_precision(target[:, c], score[:, c]) for c in range(target.shape[1])])
    if np.all(np.isnan(aps)):
        raise ValueError("mean_average_precision: no class has a positive example")
    return float(np.nanmean(aps)), aps


def frame_f1(target: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> float:
    """Micro F1 over (…, frames, classes) cells: prob >= threshold counts as active."""
    pred = np.asarray(prob) >= threshold
    ref = np.asarray(target).astype(bool)
    tp = float(np.sum(pred & ref))
    denom = float(pred.sum() + ref.sum())
    return 1.0 if denom == 0 else 2 * tp / denom


def decode_events(prob: np.ndarray, hop_s: float, classes: tuple[str, ...] | list[str],
                  threshold: float = 0.5, min_dur_s: float = 0.0) -> list[dict]:
    """Frame probabilities (T, C) -> events [{label, onset, offset}] of runs above threshold."""
    active = np.asarray(prob) >= threshold  # (T, C)
    events = []
    for c, name in enumerate(classes):
        x = np.r_[False, active[:, c], False].astype(np.int8)
        starts, ends = np.flatnonzero(np.diff(x) == 1), np.flatnonzero(np.diff(x) == -1)
        for s, e in zip(starts, ends):
            if (e - s) * hop_s >= min_dur_s:
                events.append({"label": name, "onset": s * hop_s, "offset": e * hop_s})
    return sorted(events, key=lambda ev: ev["onset"])


def onset_counts(reference: list[dict], estimated: list[dict], tolerance: float = 0.2) -> tuple[int, int, int]:
    """(true positives, n_reference, n_estimated) matching onsets of same-label events one-to-one.

    Greedy by onset distance: all (ref, est) pairs within tolerance, closest first.
    """
    pairs = sorted(
        (abs(r["onset"] - e["onset"]), i, j)
        for i, r in enumerate(reference) for j, e in enumerate(estimated)
        if r["label"] == e["label"] and abs(r["onset"] - e["onset"]) <= tolerance
    )
    used_r, used_e, tp = set(), set(), 0
    for _, i, j in pairs:
        if i not in used_r and j not in used_e:
            used_r.add(i)
            used_e.add(j)
            tp += 1
    return tp, len(reference), len(estimated)


def onset_f1(references: list[list[dict]], estimates: list[list[dict]], tolerance: float = 0.2) -> float:
    """Event-based onset F1 (micro over clips and classes)."""
    if len(references) != len(estimates):
        raise ValueError(f"onset_f1: {len(references)} reference clips vs {len(estimates)} estimated")
    tp = n_ref = n_est = 0
    for r, e in zip(references, estimates):
        a, b, c = onset_counts(r, e, tolerance)
        tp, n_ref, n_est = tp + a, n_ref + b, n_est + c
    return 1.0 if n_ref + n_est == 0 else 2 * tp / (n_ref + n_est)
