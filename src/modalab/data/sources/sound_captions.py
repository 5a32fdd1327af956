"""Template captions of synthetic sound scenes: which events, in which order, which overlap.

Events are taken in onset order. An event that starts before the previous one has ended is joined
with "over" (it overlaps), otherwise with ", then":

    [beep 0.2-0.4, chirp 1.0-1.2]             -> "a beep, then a chirp"
    [siren 0.0-2.0, beep 0.5-0.7, clap 3-3.1] -> "a siren, then a beep over it, then a clap"

The same template turns an event detector's decoded events into the cascaded baseline's caption.
"""

from __future__ import annotations

from modalab.data.sources.sound_events import CLASSES

PHRASES: dict[str, str] = {"bark": "a bark", "siren": "a siren", "rain": "rain", "engine": "an engine",
                           "beep": "a beep", "clap": "a clap", "chirp": "a chirp"}


def scene_caption(events: list[dict]) -> str:
    """Caption of ``events`` ([{label, onset, offset}]); "silence" when there are none."""
    if not events:
        return "silence"
    parts: list[str] = []
    prev_end = None
    for e in sorted(events, key=lambda e: (e["onset"], e["label"])):
        if e["label"] not in PHRASES:
            raise ValueError(f"scene_caption: unknown event label {e['label']!r}; expected one of {CLASSES}")
        phrase = PHRASES[e["label"]]
        if prev_end is not None and e["onset"] < prev_end:
            phrase += " over it"
        parts.append(phrase)
        prev_end = max(prev_end or 0.0, e["offset"])
    return ", then ".join(parts)
