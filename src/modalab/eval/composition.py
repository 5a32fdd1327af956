"""Compositional probe (``eval.probe: [composition]``): does the model prefer an image's true
caption over the same caption with its structure broken?

For every held-out scene (``data.source: digit_scenes``; the scene is in ``Sample.meta``) and
every perturbation type of ``data/scene_negatives.py`` that applies to it (swap_attribute,
swap_object, replace_relation, count; the structure of ARO and SugarCrepe), the probe compares
``cos(image, true caption)`` with ``cos(image, perturbed caption)``; a type's accuracy is the share
of its scenes where the true caption wins (ties count as wrong). Chance is 0.5. A model that reads
captions as bags of words cannot beat chance on the two swap types, whose captions hold the same
words.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from modalab.data.scene_negatives import PROBES, perturb
from modalab.data.scenes import caption


def probe_items(scenes: Sequence[Any], seed: int = 0) -> list[tuple[int, str, str, str]]:
    """``(scene index, type, true caption, perturbed caption)`` for every applicable pair."""
    items = []
    for i, sc in enumerate(scenes):
        true = caption(sc)
        rng = random.Random(f"probe/{seed}/{i}")
        for kind in PROBES:
            p = perturb(sc, kind, rng)
            if p is not None and caption(p) != true:
                items.append((i, kind, true, caption(p)))
    return items


@torch.no_grad()
def composition_probe(images: Tensor, scenes: Sequence[Any], encode_image: Callable[[Tensor], Tensor],
                      encode_text: Callable[[list[str]], Tensor], batch_size: int = 256,
                      seed: int = 0) -> dict[str, float]:
    """Per-type accuracy (``<type>``), scene counts (``<type>_n``) and the mean over types (``mean``).

    Args:
        images: (N, C, H, W) held-out images, row i showing ``scenes[i]``.
        encode_image / encode_text: (n, C, H, W) -> (n, E) and list of n captions -> (n, E),
            L2-normalised.
    """
    if len(scenes) != images.shape[0]:
        raise ValueError(f"composition_probe: {images.shape[0]} images but {len(scenes)} scenes")
    items = probe_items(scenes, seed)
    img = torch.cat([encode_image(images[s: s + batch_size]) for s in range(0, len(images), batch_size)])
    texts = sorted({t for it in items for t in it[2:]})
    where = {t: k for k, t in enumerate(texts)}
    txt = torch.cat([encode_text(texts[s: s + batch_size]) for s in range(0, len(texts), batch_size)])
    out: dict[str, float] = {}
    accs = []
    for kind in PROBES:
        rows = [it for it in items if it[1] == kind]
        if not rows:
            continue
        idx = torch.tensor([r[0] for r in rows])
        s_true = (img[idx] * txt[torch.tensor([where[r[2]] for r in rows])]).sum(-1)  # (n,)
        s_false = (img[idx] * txt[torch.tensor([where[r[3]] for r in rows])]).sum(-1)  # (n,)
        out[kind] = float((s_true > s_false).float().mean())
        out[f"{kind}_n"] = len(rows)
        accs.append(out[kind])
    out["mean"] = sum(accs) / len(accs) if accs else float("nan")
    return out
