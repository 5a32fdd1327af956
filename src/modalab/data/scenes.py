"""Compositional scenes of real handwritten digits: the scene description, its rendering and its
captions (used by ``data/sources/digit_scenes.py`` and ``data/scene_negatives.py``).

A scene is 1-4 digits on a black square canvas split into a 2x2 grid of cells. Each digit has an
identity (0-9, drawn as one of scikit-learn's real 8x8 scans), a colour (red, green, blue, yellow)
and a size (small = a quarter of the canvas side, large = 0.45 of it), and sits in its own cell
with a little jitter. Two digits stand side by side (``left of`` / ``right of``) or one above the
other (``above`` / ``below``); three or four fill cells of the grid and are described in reading
order (row by row, left to right).

Captions come at four granularities:

- ``count``: "two digits"
- ``objects``: "a 3 and a 7"
- ``attributes``: "a red 3 and a blue 7"
- ``full``: "a small red 3" (one digit), "two digits: a small red 3 left of a large blue 7",
  "three digits: a small red 3, a large blue 7 and a small green 1" (reading order).

Each digit also has its phrase ("a small red 3") and pixel box ``(x0, y0, x1, y1)``, for
region-phrase contrast.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.15, 0.15), "green": (0.15, 0.9, 0.2), "blue": (0.25, 0.4, 1.0), "yellow": (1.0, 0.9, 0.1),
}
SIZES: dict[str, float] = {"small": 0.25, "large": 0.45}  # digit side / canvas side
RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
COUNTS = ("zero", "one", "two", "three", "four", "five")
GRANULARITIES = ("count", "objects", "attributes", "full")


@dataclass(frozen=True)
class Digit:
    """One digit: identity 0-9, colour and size names, its scan (an index into the digit images)
    and its grid cell (row, col) with a jitter in [0, 1) of the cell's free space."""

    digit: int
    colour: str
    size: str
    scan: int = 0
    cell: tuple[int, int] = (0, 0)
    jitter: tuple[float, float] = (0.5, 0.5)

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.digit}"


@dataclass(frozen=True)
class Scene:
    """Digits in caption order; ``relation`` between the first two when there are exactly two."""

    digits: tuple[Digit, ...]
    relation: str | None = None

    def with_digits(self, digits: list[Digit]) -> "Scene":
        return replace(self, digits=tuple(digits))


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene, granularity: str = "full") -> str:
    """The scene's caption at ``granularity`` (one of :data:`GRANULARITIES`)."""
    ds, n = scene.digits, len(scene.digits)
    if granularity == "count":
        return f"{COUNTS[n]} digit{'s' if n > 1 else ''}"
    if granularity == "objects":
        return _join([f"a {d.digit}" for d in ds])
    if granularity == "attributes":
        return _join([f"a {d.colour} {d.digit}" for d in ds])
    if granularity != "full":
        raise ValueError(f"unknown caption granularity {granularity!r}; expected one of {GRANULARITIES}")
    if n == 1:
        return ds[0].phrase()
    if n == 2 and scene.relation is not None:
        return f"two digits: {ds[0].phrase()} {scene.relation} {ds[1].phrase()}"
    return f"{COUNTS[n]} digits: " + _join([d.phrase() for d in ds])


def sample_scene(rng: random.Random, n: int, scans: dict[int, list[int]],
                 colour_of: "callable[[int, random.Random], str] | None" = None) -> Scene:
    """A random scene of ``n`` digits; ``scans[d]`` lists the scan indices of digit ``d`` to draw
    from; ``colour_of(digit, rng)`` picks a colour (default: uniform)."""
    pick = colour_of or (lambda d, r: r.choice(list(COLOURS)))
    digits_ = [rng.randrange(10) for _ in range(n)]
    made = [Digit(d, pick(d, rng), rng.choice(list(SIZES)), rng.choice(scans[d]), (0, 0),
                  (rng.random(), rng.random())) for d in digits_]
    if n == 2:
        rel = rng.choice(RELATIONS)
        row = rng.randrange(2)
        cells = {"left of": [(row, 0), (row, 1)], "right of": [(row, 1), (row, 0)],
                 "above": [(0, row), (1, row)], "below": [(1, row), (0, row)]}[rel]
        return Scene(tuple(replace(d, cell=c) for d, c in zip(made, cells)), rel)
    cells = rng.sample([(0, 0), (0, 1), (1, 0), (1, 1)], n)
    if n > 2:
        cells.sort()  # reading order: the caption lists the digits row by row
    return Scene(tuple(replace(d, cell=c) for d, c in zip(made, cells)))


def boxes(scene: Scene, canvas: int) -> list[tuple[int, int, int, int]]:
    """Pixel box ``(x0, y0, x1, y1)`` (exclusive ends) of each digit, in caption order."""
    half = canvas // 2
    out = []
    for d in scene.digits:
        side = max(2, round(SIZES[d.size] * canvas))
        free = max(0, half - side)
        x0 = d.cell[1] * half + int(d.jitter[0] * (free + 1) * 0.999)
        y0 = d.cell[0] * half + int(d.jitter[1] * (free + 1) * 0.999)
        out.append((x0, y0, x0 + side, y0 + side))
    return out


def render(scene: Scene, scans: Tensor, canvas: int) -> Tensor:
    """(3, canvas, canvas) image in [0, 1]: each scan (``scans``: (N, 8, 8) in [0, 1]) resized to
    its box, tinted with its colour and drawn on black (cells never overlap)."""
    img = torch.zeros(3, canvas, canvas)
    for d, (x0, y0, x1, y1) in zip(scene.digits, boxes(scene, canvas)):
        glyph = F.interpolate(scans[d.scan][None, None], size=(y1 - y0, x1 - x0), mode="bilinear",
                              align_corners=False)[0, 0].clamp(0, 1)  # (h, w)
        tint = torch.tensor(COLOURS[d.colour])[:, None, None]  # (3, 1, 1)
        img[:, y0:y1, x0:x1] = torch.maximum(img[:, y0:y1, x0:x1], glyph[None] * tint)
    return img
