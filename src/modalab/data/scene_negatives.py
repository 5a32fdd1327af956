"""Hard negatives and probe perturbations of a digit scene's caption (``data/scenes.py``).

Negative levels, after the chapter's semantic levels (5.1.4: Level 1 unrelated, Level 2 same
domain, Level 3 fine-grained); the mapping onto scenes is ours:

- ``L1`` different digits: a caption of another random scene whose digits are all different;
- ``L2`` same digits, different relation or count: two digits get the opposite relation, other
  scenes gain (or, at four, lose) a digit;
- ``L3`` one attribute changed: one digit's colour or size is replaced;
- ``swap`` (not a level of the chapter; NegCLIP's negatives): attributes or digits exchanged
  between two digits, or the relation flipped (``data/scene_swaps.py``).

Probe perturbations (the structure of ARO and SugarCrepe: the true caption against a caption with
the same words rearranged or one part replaced):

- ``swap_attribute``: two digits of different colours exchange colours (or, if all colours agree,
  sizes); the bag of words is unchanged;
- ``swap_object``: two different digits exchange identities; the bag of words is unchanged;
- ``replace_relation``: the relation of a two-digit scene becomes its opposite;
- ``count``: one digit phrase is added (or, at four, removed), so the count word changes.

A perturbation that does not apply to a scene (e.g. ``swap_object`` when both digits are 3s)
returns None and the probe leaves that scene out for that type.
"""

from __future__ import annotations

import random
from dataclasses import replace

from modalab.data.scene_swaps import swap_negative
from modalab.data.scenes import COLOURS, OPPOSITE, SIZES, Digit, Scene, caption

LEVELS = ("L1", "L2", "L3")
KINDS = (*LEVELS, "swap")  # what data.negative_levels accepts
PROBES = ("swap_attribute", "swap_object", "replace_relation", "count")


def _swap(scene: Scene, field: str) -> Scene | None:
    ds = list(scene.digits)
    for i in range(len(ds)):
        for j in range(i + 1, len(ds)):
            a, b = getattr(ds[i], field), getattr(ds[j], field)
            if a != b:
                ds[i], ds[j] = replace(ds[i], **{field: b}), replace(ds[j], **{field: a})
                return scene.with_digits(ds)
    return None


def _add_or_remove(scene: Scene, rng: random.Random) -> Scene:
    ds = list(scene.digits)
    if len(ds) >= 4:
        ds.pop(rng.randrange(len(ds)))
    else:
        ds.insert(rng.randrange(len(ds) + 1),
                  Digit(rng.randrange(10), rng.choice(list(COLOURS)), rng.choice(list(SIZES))))
    rel = (scene.relation or rng.choice(list(OPPOSITE))) if len(ds) == 2 else None
    return Scene(tuple(ds), rel)


def perturb(scene: Scene, kind: str, rng: random.Random) -> Scene | None:
    """The scene behind a probe caption of type ``kind`` (one of :data:`PROBES`), or None."""
    if kind == "swap_attribute":
        return _swap(scene, "colour") or _swap(scene, "size")
    if kind == "swap_object":
        return _swap(scene, "digit")
    if kind == "replace_relation":
        return replace(scene, relation=OPPOSITE[scene.relation]) if scene.relation else None
    if kind == "count":
        return _add_or_remove(scene, rng)
    raise ValueError(f"unknown probe type {kind!r}; expected one of {PROBES}")


def negative(scene: Scene, level: str, rng: random.Random) -> Scene:
    """A scene whose ``full`` caption is a level-``level`` negative of ``scene``'s (see above)."""
    if level == "L1":
        used = {d.digit for d in scene.digits}
        others = [k for k in range(10) if k not in used]
        ds = [Digit(rng.choice(others), rng.choice(list(COLOURS)), rng.choice(list(SIZES)))
              for _ in range(rng.randint(1, 4))]
        rel = rng.choice(list(OPPOSITE)) if len(ds) == 2 else None
        return Scene(tuple(ds), rel)
    if level == "L2":
        if scene.relation is not None and rng.random() < 0.5:
            return replace(scene, relation=OPPOSITE[scene.relation])
        return _add_or_remove(scene, rng)
    if level == "swap":
        swapped = swap_negative(scene, rng)
        return swapped[1] if swapped is not None else negative(scene, "L3", rng)
    if level == "L3":
        ds = list(scene.digits)
        i = rng.randrange(len(ds))
        if rng.random() < 0.5:
            ds[i] = replace(ds[i], colour=rng.choice([c for c in COLOURS if c != ds[i].colour]))
        else:
            ds[i] = replace(ds[i], size="large" if ds[i].size == "small" else "small")
        return scene.with_digits(ds)
    raise ValueError(f"unknown negative level {level!r}; expected one of {KINDS}")


def negative_captions(scene: Scene, levels: tuple[str, ...], rng: random.Random) -> list[str]:
    """One ``full`` caption per level, never equal to the scene's own caption."""
    true = caption(scene)
    out = []
    for lv in levels:
        for _ in range(8):
            c = caption(negative(scene, lv, rng))
            if c != true:
                break
        out.append(c)
    return out
