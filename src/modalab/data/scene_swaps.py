"""NegCLIP-style swap negatives of a digit scene (``data.negative_levels: [..., swap]``).

NegCLIP (Yuksekgonul et al. 2023) makes its hard negatives by rearranging the true caption: two
attributes exchanged between objects, two objects exchanged, a relation replaced. The L1-L3 levels of
``data/scene_negatives.py`` never rearrange (L3 changes one attribute to a new value), so a caption
with the same bag of words as the true one is never a negative. A ``swap`` negative is one of:

- ``swap_attribute``: two digits with different colours (or sizes) exchange them;
- ``swap_object``: two different digits exchange identities;
- ``replace_relation``: a two-digit scene's relation becomes its opposite.

One type is drawn uniformly among those that apply to the scene, and the pair of digits uniformly
among the pairs that differ in the swapped field. A scene where none applies (one digit, or digits
alike in identity, colour and size with no relation) gets an L3 negative instead (one attribute
changed), so every image still has one caption per entry of ``data.negative_levels``.

These are made from the *training* scene being read; the compositional probe
(``eval/composition.py``) perturbs the held-out test scenes, so no probe scene or caption pair is
seen in training (the same *kind* of perturbation is, which is the point of the experiment).
"""

from __future__ import annotations

import random
from dataclasses import replace

from modalab.data.scenes import OPPOSITE, Scene

SWAP_TYPES = ("swap_attribute", "swap_object", "replace_relation")


def swap_pairs(scene: Scene, field: str) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, i < j, of digits whose ``field`` values differ."""
    ds = scene.digits
    return [(i, j) for i in range(len(ds)) for j in range(i + 1, len(ds))
            if getattr(ds[i], field) != getattr(ds[j], field)]


def swap_fields(scene: Scene, field: str, i: int, j: int) -> Scene:
    """``scene`` with digits ``i`` and ``j`` exchanging their ``field`` values."""
    ds = list(scene.digits)
    a, b = getattr(ds[i], field), getattr(ds[j], field)
    ds[i], ds[j] = replace(ds[i], **{field: b}), replace(ds[j], **{field: a})
    return scene.with_digits(ds)


def swap_options(scene: Scene) -> dict[str, list[tuple[str, int, int]]]:
    """The applicable swaps of ``scene`` by type: ``(field, i, j)`` triples (relation: one entry)."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    attr = [(f, i, j) for f in ("colour", "size") for i, j in swap_pairs(scene, f)]
    if attr:
        out["swap_attribute"] = attr
    obj = [("digit", i, j) for i, j in swap_pairs(scene, "digit")]
    if obj:
        out["swap_object"] = obj
    if scene.relation is not None:
        out["replace_relation"] = [("relation", 0, 1)]
    return out


def swap_negative(scene: Scene, rng: random.Random) -> tuple[str, Scene] | None:
    """``(type, swapped scene)`` for one random applicable swap of ``scene``, or None if none applies."""
    options = swap_options(scene)
    if not options:
        return None
    kind = rng.choice(sorted(options))
    field, i, j = rng.choice(options[kind])
    if kind == "replace_relation":
        return kind, replace(scene, relation=OPPOSITE[scene.relation])  # type: ignore[index]
    return kind, swap_fields(scene, field, i, j)
