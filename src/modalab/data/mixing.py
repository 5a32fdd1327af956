"""Weighted mixtures of data sources or tasks whose weights follow a schedule over training.

The chapter's recipe: understanding : generation = 3 : 1 early, balanced later. A
``MixtureSchedule`` holds phases ``(start_progress, weights)``; progress is ``step / total_steps``
in [0, 1]. Weights are piecewise constant, or linearly interpolated between phase starts
(``interpolate=True``) for a gradual shift.

``MixtureSampler`` draws a source name for each item of each step. Draws depend only on
``(seed, step)``, so a resumed run or a rerun picks exactly the same sources, whatever happened
before. It counts what it drew: ``realised()`` gives the realised shares (overall and in the current
phase) and ``log()`` a flat dict for metrics.jsonl.

    schedule = MixtureSchedule([(0.0, {"understand": 3, "generate": 1}),
                                (0.5, {"understand": 1, "generate": 1})])
    sampler = MixtureSampler(schedule, total_steps=1000, seed=0)
    for step, (name, item) in enumerate(mix({"understand": u, "generate": g}, sampler, 1000)): ...
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np


class MixtureSchedule:
    """Phases ``[(start, {name: weight}), ...]`` with starts ascending from 0.0 and the same names
    in every phase. Weights are non-negative and need not sum to 1."""

    def __init__(self, phases: Sequence[tuple[float, Mapping[str, float]]], interpolate: bool = False):
        if not phases:
            raise ValueError("data/mixing.py: a schedule needs at least one phase (start, weights)")
        starts = [float(s) for s, _ in phases]
        if starts[0] != 0.0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= 1.0:
            raise ValueError(
                f"data/mixing.py: phase starts must begin at 0.0, increase strictly and stay below 1.0; "
                f"got {starts}"
            )
        names = sorted(phases[0][1])
        for s, w in phases:
            if sorted(w) != names:
                raise ValueError(
                    f"data/mixing.py: phase at {s} has sources {sorted(w)}, expected {names} "
                    "(give every source a weight in every phase, 0 to switch it off)"
                )
            if any(v < 0 for v in w.values()) or sum(w.values()) <= 0:
                raise ValueError(
                    f"data/mixing.py: weights at {s} must be >= 0 with a positive sum, got {dict(w)}"
                )
        self.names = names
        self.starts = starts
        self.weights = [np.array([float(w[n]) for n in names]) / sum(w.values()) for _, w in phases]
        self.interpolate = interpolate

    @classmethod
    def constant(cls, weights: Mapping[str, float]) -> "MixtureSchedule":
        return cls([(0.0, weights)])

    def phase(self, progress: float) -> int:
        return bisect.bisect_right(self.starts, min(max(progress, 0.0), 1.0)) - 1

    def probs(self, progress: float) -> np.ndarray:
        """Normalised weights at ``progress``, in the order of ``self.names``."""
        i = self.phase(progress)
        if not self.interpolate or i + 1 >= len(self.starts):
            return self.weights[i]
        a, b = self.starts[i], self.starts[i + 1]
        t = (progress - a) / (b - a)
        return (1 - t) * self.weights[i] + t * self.weights[i + 1]

    def weights_at(self, progress: float) -> dict[str, float]:
        return dict(zip(self.names, self.probs(progress).tolist()))


class MixtureSampler:
    """Draws source names by the schedule; reproducible per ``(seed, step)``; counts realised draws."""

    def __init__(self, schedule: MixtureSchedule, total_steps: int, seed: int = 0) -> None:
        if total_steps <= 0:
            raise ValueError(f"data/mixing.py: total_steps must be positive, got {total_steps}")
        self.schedule, self.total_steps, self.seed = schedule, total_steps, seed
        self.counts: Counter[str] = Counter()
        self.phase_counts: dict[int, Counter[str]] = {}
        self.last_phase = 0

    def progress(self, step: int) -> float:
        return step / self.total_steps

    def choose(self, step: int, n: int = 1) -> list[str]:
        """Names for the ``n`` items of ``step`` (same answer for the same seed and step)."""
        p = self.schedule.probs(self.progress(step))
        rng = np.random.default_rng([self.seed, step])
        idx = rng.choice(len(p), size=n, p=p)
        names = [self.schedule.names[i] for i in idx]
        phase = self.schedule.phase(self.progress(step))
        self.last_phase = phase
        self.counts.update(names)
        self.phase_counts.setdefault(phase, Counter()).update(names)
        return names

    def realised(self, phase: int | None = None) -> dict[str, float]:
        """Share of draws per source, overall or within one phase."""
        c = self.counts if phase is None else self.phase_counts.get(phase, Counter())
        total = sum(c.values())
        return {n: (c[n] / total if total else 0.0) for n in self.schedule.names}

    def log(self, step: int) -> dict[str, float]:
        """Flat metrics: target weights at ``step`` and realised shares (overall, current phase)."""
        out: dict[str, float] = {}
        for n, w in self.schedule.weights_at(self.progress(step)).items():
            out[f"mix/target/{n}"] = w
        for n, r in self.realised().items():
            out[f"mix/realised/{n}"] = r
        for n, r in self.realised(self.last_phase).items():
            out[f"mix/realised_phase/{n}"] = r
        out["mix/phase"] = float(self.last_phase)
        out["mix/draws_phase"] = float(sum(self.phase_counts.get(self.last_phase, Counter()).values()))
        return out


def mix(
    sources: Mapping[str, Iterable[Any]], sampler: MixtureSampler, steps: int, start_step: int = 0
) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, item)`` per step, one item per step from the chosen source; a source that
    runs out is iterated again from the start."""
    missing = set(sampler.schedule.names) - set(sources)
    if missing:
        raise ValueError(
            f"data/mixing.py: the schedule names sources {sorted(missing)} that were not given; "
            f"given: {sorted(sources)}"
        )
    iters = {n: iter(src) for n, src in sources.items()}
    for step in range(start_step, start_step + steps):
        (name,) = sampler.choose(step)
        try:
            item = next(iters[name])
        except StopIteration:
            iters[name] = iter(sources[name])
            try:
                item = next(iters[name])
            except StopIteration:
                raise ValueError(f"data/mixing.py: source '{name}' is empty") from None
        yield name, item
