"""Qualitative retrieval examples: a few held-out images with the captions they retrieve.

The report draws them (``experiment/report_panels.py``): numbers say how often retrieval is right,
the examples show *how* it goes wrong (a 3 that retrieves "an 8", a caption that is never ranked).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


def thumbnail(image: Tensor, max_side: int = 64) -> list | None:
    """A (C, H, W) image as nested lists of uint8 in [0, 255] (min-max scaled), ``None`` when the
    tensor is not a 1- or 3-channel picture (a waveform, a clip). Larger images are subsampled to
    at most ``max_side`` pixels a side so the artifact stays small."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        return None
    step = max(1, (max(image.shape[1:]) + max_side - 1) // max_side)
    x = image[:, ::step, ::step].float()  # (C, h, w)
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    return (x * 255).round().to(torch.uint8).tolist()


def pick_examples(labels: Tensor | None, n_items: int, n: int) -> list[int]:
    """``n`` test indices: one per class in turn (so several classes show) or evenly spaced."""
    n = min(n, n_items)
    if labels is None:
        return [int(i) for i in torch.linspace(0, n_items - 1, n).round().long()]
    picked: list[int] = []
    per_class = [(labels == c).nonzero().flatten().tolist() for c in labels.unique()]
    depth = 0
    while len(picked) < n:
        for idx in per_class:
            if depth < len(idx) and len(picked) < n:
                picked.append(idx[depth])
        depth += 1
    return picked


def retrieval_examples(
    image_emb: Tensor,
    text_emb: Tensor,
    labels: Tensor | None,
    images: Sequence[Tensor | None],
    texts: Sequence[str],
    n: int = 8,
    k: int = 5,
) -> dict[str, Any]:
    """Top-``k`` captions retrieved by ``n`` held-out images.

    image_emb: (N, D), text_emb: (N, D) L2-normalised embeddings of the test split (item i's
    caption is ``texts[i]``); labels: (N,) or None. A retrieved caption is correct when its label
    equals the image's (label matching) or, without labels, when it is the image's own caption.
    ``images[i]`` is the test item's (C, H, W) tensor, read only for the ``n`` picked items.
    Returns ``{"k", "match", "examples": [{"index", "label", "caption", "image", "top": [{"text",
    "score", "correct"}]}]}``.
    """
    k = min(k, text_emb.shape[0])
    examples = []
    for i in pick_examples(labels, image_emb.shape[0], n):
        scores = image_emb[i] @ text_emb.T  # (N,)
        top = torch.topk(scores, k)
        hits = []
        for s, j in zip(top.values.tolist(), top.indices.tolist()):
            correct = bool(labels[j] == labels[i]) if labels is not None else j == i
            hits.append({"text": texts[j], "score": round(float(s), 4), "correct": correct})
        img = images[i]
        examples.append({
            "index": i,
            "label": int(labels[i]) if labels is not None else None,
            "caption": texts[i],
            "image": thumbnail(img) if img is not None else None,
            "top": hits,
        })
    return {"k": k, "match": "label" if labels is not None else "pair", "examples": examples}
