"""Choosing a sampler setting on the validation split: the rule both generation tasks use.

A row is one setting's validation scores: ``class_match`` (the fraction of samples the judge reads
as the prompted class), ``fid`` and, for a bound, ``n`` (how many samples the class-match counts).
The rule keeps the rows whose class-match clears ``bar`` and takes the lowest FID among them; when
none clears it, the highest class-match.

With ``confidence`` > 0 a row clears the bar only when the one-sided Wilson lower bound of its
class-match at that confidence does (Wilson 1927; the score interval, which stays inside [0, 1] and
keeps its coverage near 0 and 1 where the normal interval does not). A val class-match of 0.904 on
135 prompts (standard error about 2.5 points) then no longer counts as meeting 0.90.
``confidence`` = 0 compares the point estimate, the rule as it was before.
"""

from __future__ import annotations

import math
from statistics import NormalDist


def wilson_lower(p: float, n: int, confidence: float) -> float:
    """One-sided Wilson score lower bound of a proportion p observed on n trials; p itself at 0."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"wilson_lower: p={p}; expected a proportion in [0, 1]")
    if not 0.0 <= confidence < 1.0:
        raise ValueError(f"wilson_lower: confidence={confidence}; expected 0 <= confidence < 1")
    if confidence == 0.0:
        return p
    if n < 1:
        raise ValueError(f"wilson_lower: n={n}; a bound needs at least one trial")
    z = NormalDist().inv_cdf(confidence)
    z2n = z * z / n
    centre = p + z2n / 2
    half = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return max(0.0, (centre - half) / (1 + z2n))


def pick_rule(bar: float, confidence: float = 0.0) -> str:
    """:func:`pick`'s rule in words, as the val-sweep logs record it."""
    if confidence == 0.0:
        return f"lowest val FID with val class-match >= {bar}, else the highest class-match"
    return (f"lowest val FID with the one-sided {confidence:g} Wilson lower bound of val class-match "
            f">= {bar}, else the highest class-match")


def clears(row: dict[str, float], bar: float, confidence: float = 0.0) -> bool:
    """Whether a row's ``class_match`` (its Wilson lower bound over ``n`` samples when
    ``confidence`` > 0) reaches bar."""
    if not confidence:
        return row["class_match"] >= bar
    if "n" not in row:
        raise ValueError(f"sampler_select: a confidence bound needs the row's sample count 'n'; got keys {sorted(row)}")
    return wilson_lower(row["class_match"], int(row["n"]), confidence) >= bar


def pick(rows: list[dict[str, float]], bar: float, confidence: float = 0.0) -> int:
    """Index of the row with the lowest ``fid`` among rows whose ``class_match`` (its Wilson lower
    bound over ``n`` samples when ``confidence`` > 0) is >= bar, else of the highest ``class_match``
    (ties: the earlier row)."""
    if not rows:
        raise ValueError("pick: no rows to choose from")
    ok = [i for i, r in enumerate(rows) if clears(r, bar, confidence)]
    if ok:
        return min(ok, key=lambda i: (rows[i]["fid"], i))
    return max(range(len(rows)), key=lambda i: (rows[i]["class_match"], -i))
