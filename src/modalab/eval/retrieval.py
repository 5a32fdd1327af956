"""Cross-modal retrieval metrics from a similarity matrix.

``retrieval_ranks(sim, match)``: for each query row, the rank of its best correct item, where
``match[i, j]`` says whether item j is a correct answer for query i. Ties are broken
pessimistically: a wrong item with a score equal to the best correct score ranks above it, so
rank = 1 + #(wrong items with score >= best correct score).

``retrieval_metrics`` reports open_clip's keys for both directions:
``{image_to_text,text_to_image}_{mean_rank,median_rank,R@1,R@5,R@10}``.

What counts as correct: with ``match = "pair"`` the query's own pair (the diagonal) and, when the
captions' token rows are given (``texts``), every pair whose caption is token for token the same as
the query's own: a text encoder cannot tell identical captions apart, so under pessimistic ties
such a duplicate would otherwise make a correct retrieval count as a miss (on the compositional
scenes about a fifth of the held-out captions, the one-digit ones, have a twin). With
``match = "label"`` any item with the same label. Captions that name only the class make many test
captions identical, so instance retrieval is ill-posed there and label matching is the default when
labels exist.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def retrieval_ranks(sim: Tensor, match: Tensor) -> Tensor:
    """1-based pessimistic rank of the best correct item for each query.

    Args:
        sim: (Q, N) similarities; match: (Q, N) bool, at least one True per row.
    Returns:
        (Q,) int64 ranks.
    """
    if sim.shape != match.shape:
        raise ValueError(f"sim {tuple(sim.shape)} and match {tuple(match.shape)} differ in shape")
    if not bool(match.any(dim=1).all()):
        bad = int((~match.any(dim=1)).nonzero()[0])
        raise ValueError(f"query {bad} has no correct item in the match matrix")
    sim = sim.float()
    neg_inf = torch.finfo(sim.dtype).min
    best = sim.masked_fill(~match, neg_inf).max(dim=1).values  # (Q,)
    wrong_above = ((sim >= best[:, None]) & ~match).sum(dim=1)  # (Q,)
    return wrong_above + 1


def pad_cat(tokens: list[Tensor]) -> Tensor:
    """Token batches (B_i, L_i) -> (sum B_i, max L_i), right-padded with 0 (the padding id)."""
    width = max(t.shape[1] for t in tokens)
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in tokens])


def caption_groups(texts: Tensor) -> Tensor:
    """(N,) int64 ids, equal where two (N, L) token rows are identical."""
    return torch.unique(texts, dim=0, return_inverse=True)[1]


def match_matrix(labels: Tensor | None, n: int, mode: str, texts: Tensor | None = None) -> Tensor:
    """(n, n) bool: for ``pair`` the diagonal, or identical captions when ``texts`` (n, L) token
    rows are given; same label for ``label``."""
    if mode == "pair" or labels is None:
        if texts is None:
            return torch.eye(n, dtype=torch.bool)
        if texts.shape[0] != n:
            raise ValueError(f"texts hold {texts.shape[0]} token rows for {n} pairs")
        ids = caption_groups(texts)
        return ids[:, None] == ids[None, :]
    if mode == "label":
        return labels[:, None] == labels[None, :]
    raise ValueError(f"unknown match mode '{mode}'; expected 'pair' or 'label'")


def _summary(ranks: Tensor, prefix: str, ks: Sequence[int]) -> dict[str, float]:
    r = ranks.double()
    out = {f"{prefix}_mean_rank": r.mean().item(), f"{prefix}_median_rank": r.median().item()}
    for k in ks:
        out[f"{prefix}_R@{k}"] = (ranks <= k).double().mean().item()
    return out


def retrieval_hits(image_emb: Tensor, text_emb: Tensor, labels: Tensor | None = None, match: str = "label",
                   k: int = 1, texts: Tensor | None = None) -> dict[str, Tensor]:
    """(N,) bool per query: a correct item within the top k, both directions (the per-item form of
    :func:`retrieval_metrics`' R@k), for paired per-item statistics across runs."""
    sim = image_emb.float() @ text_emb.float().T  # (N, N)
    m = match_matrix(labels, sim.shape[0], match, texts)
    return {f"image_to_text_R@{k}": retrieval_ranks(sim, m) <= k,
            f"text_to_image_R@{k}": retrieval_ranks(sim.T, m.T) <= k}


def retrieval_metrics(
    image_emb: Tensor,
    text_emb: Tensor,
    labels: Tensor | None = None,
    match: str = "label",
    ks: Sequence[int] = (1, 5, 10),
    texts: Tensor | None = None,
) -> dict[str, float]:
    """Both retrieval directions for paired (N, D) embeddings (row i of each is a pair);
    ``texts``: the captions' (N, L) token rows, for ``pair`` matching of identical captions."""
    sim = image_emb.float() @ text_emb.float().T  # (N, N)
    m = match_matrix(labels, sim.shape[0], match, texts)
    out = _summary(retrieval_ranks(sim, m), "image_to_text", ks)
    out.update(_summary(retrieval_ranks(sim.T, m.T), "text_to_image", ks))
    return out
