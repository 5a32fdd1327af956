"""Scores of spoken-question answers split into word-dependent and prosody-dependent parts.

A parsed answer is ``{"digits": [int | None, ...], "mode": int | None, "stress": int | None}``
(``data/sources/spoken_prosody.parse_answer``); a reference has the same keys with ints.

- ``word_acc``: every digit slot right; ``digit_acc``: the share of right slots;
- ``mode_acc`` (statement / question), ``stress_acc`` (stressed position), ``prosody_acc`` (both);
- ``all_acc``: words and prosody right;
- with ``asr_ok`` (one bool per item: was the cascade's transcript exactly right?):
  ``word_acc|asr_ok``, ``word_acc|asr_err`` and ``n|asr_ok``, ``n|asr_err`` -- how ASR errors
  propagate (for the cascade) or whether the same items are hard (for the other routes).
"""

from __future__ import annotations

from typing import Sequence


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _mean(xs: list[bool]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def route_scores(parsed: Sequence[dict], refs: Sequence[dict],
                 asr_ok: Sequence[bool] | None = None) -> dict[str, float]:
    """Accuracies of ``parsed`` answers against ``refs`` (see the module docstring)."""
    if len(parsed) != len(refs) or (asr_ok is not None and len(asr_ok) != len(refs)):
        raise ValueError(f"route_scores: {len(parsed)} answers, {len(refs)} references, "
                         f"{'-' if asr_ok is None else len(asr_ok)} ASR flags; expected equal lengths")
    words = [p["digits"] == r["digits"] for p, r in zip(parsed, refs)]
    slots = [a == b for p, r in zip(parsed, refs) for a, b in zip(p["digits"], r["digits"])]
    mode = [p["mode"] == r["mode"] for p, r in zip(parsed, refs)]
    stress = [p["stress"] == r["stress"] for p, r in zip(parsed, refs)]
    out = {"word_acc": _mean(words), "digit_acc": _mean(slots), "mode_acc": _mean(mode),
           "stress_acc": _mean(stress), "prosody_acc": _mean([m and s for m, s in zip(mode, stress)]),
           "all_acc": _mean([w and m and s for w, m, s in zip(words, mode, stress)])}
    if asr_ok is not None:
        ok = [w for w, a in zip(words, asr_ok) if a]
        err = [w for w, a in zip(words, asr_ok) if not a]
        out.update({"word_acc|asr_ok": _mean(ok), "word_acc|asr_err": _mean(err),
                    "n|asr_ok": float(len(ok)), "n|asr_err": float(len(err))})
    return out
