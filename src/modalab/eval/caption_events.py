"""Score what a sound-scene caption says against the scene's events.

``parse_events(caption, classes)`` reads the class names in the caption in order of appearance
(word match, so "beep" but not "beeps" unless listed). Per caption, against the true events in
onset order:

- precision / recall of the *set* of classes mentioned (micro-averaged over the corpus);
- order accuracy: the share of captions whose sequence of mentioned classes equals the true
  sequence exactly (repeats included).
"""

from __future__ import annotations

import re
from typing import Sequence


def parse_events(caption: str, classes: Sequence[str]) -> list[str]:
    """Class names in ``caption`` in the order they appear."""
    words = re.findall(r"[a-z]+", caption.lower())
    known = set(classes)
    return [w for w in words if w in known]


def event_scores(captions: Sequence[str], events: Sequence[Sequence[dict]],
                 classes: Sequence[str]) -> dict[str, float]:
    """Micro precision / recall / F1 of mentioned classes, and exact order accuracy."""
    if len(captions) != len(events):
        raise ValueError(f"event_scores: {len(captions)} captions but {len(events)} event lists")
    tp = fp = fn = 0
    exact = 0
    for cap, evs in zip(captions, events):
        pred = parse_events(cap, classes)
        true = [e["label"] for e in sorted(evs, key=lambda e: (e["onset"], e["label"]))]
        ps, ts = set(pred), set(true)
        tp += len(ps & ts)
        fp += len(ps - ts)
        fn += len(ts - ps)
        exact += pred == true
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"event_precision": p, "event_recall": r, "event_f1": f,
            "order_accuracy": exact / len(captions) if captions else 0.0}


def merge_fragments(events: Sequence[dict], gap_s: float) -> list[dict]:
    """Join same-label events separated by at most ``gap_s`` seconds (a detector's fragmented runs)."""
    out: list[dict] = []
    for e in sorted(events, key=lambda e: (e["label"], e["onset"])):
        if out and out[-1]["label"] == e["label"] and e["onset"] - out[-1]["offset"] <= gap_s:
            out[-1] = {**out[-1], "offset": max(out[-1]["offset"], e["offset"])}
        else:
            out.append(dict(e))
    return sorted(out, key=lambda e: (e["onset"], e["label"]))
