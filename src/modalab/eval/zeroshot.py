"""Zero-shot classification with text prompts.

Each class's text embedding is the normalised mean of its prompts' normalised embeddings (a prompt
ensemble; one prompt is the special case). Accuracy@k counts a hit when the true class ranks within
the top k, with ties broken pessimistically as in :mod:`modalab.eval.retrieval`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor

from modalab.eval.retrieval import retrieval_ranks


def class_embeddings(
    encode_text: Callable[[list[str]], Tensor], classnames: Sequence[str], prompts: Sequence[str]
) -> Tensor:
    """(C, D) unit-norm class embeddings; prompts contain ``{label}``."""
    if not prompts:
        raise ValueError("zero-shot evaluation needs at least one prompt containing '{label}'")
    for p in prompts:
        if "{label}" not in p:
            raise ValueError(f"prompt {p!r} does not contain '{{label}}'")
    texts = [p.format(label=c) for c in classnames for p in prompts]
    emb = F.normalize(encode_text(texts).float(), dim=-1)  # (C * P, D)
    emb = emb.view(len(classnames), len(prompts), -1).mean(dim=1)  # (C, P, D) -> (C, D)
    return F.normalize(emb, dim=-1)


def zeroshot_accuracy(
    image_emb: Tensor, class_emb: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """``zeroshot_top{k}`` for image (N, D) vs class (C, D) embeddings and (N,) labels."""
    sim = image_emb.float() @ class_emb.float().T  # (N, C)
    match = F.one_hot(labels, num_classes=class_emb.shape[0]).bool()
    ranks = retrieval_ranks(sim, match)
    return {f"zeroshot_top{k}": (ranks <= k).double().mean().item() for k in ks}


def zeroshot_hits(image_emb: Tensor, class_emb: Tensor, labels: Tensor, k: int = 1) -> Tensor:
    """(N,) bool: item i's true class ranks within the top k (the per-item form of
    :func:`zeroshot_accuracy`, same pessimistic ties), for paired per-item statistics."""
    sim = image_emb.float() @ class_emb.float().T  # (N, C)
    match = F.one_hot(labels, num_classes=class_emb.shape[0]).bool()
    return retrieval_ranks(sim, match) <= k


def predict(image_emb: Tensor, class_emb: Tensor) -> Tensor:
    """(N,) predicted class indices."""
    return (image_emb.float() @ class_emb.float().T).argmax(dim=1)
