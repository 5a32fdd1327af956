"""Mined hard negatives *added to* the in-batch softmax (NegCLIP style, ``mode="added"``) against a
float64 loop reference, values and gradients; and its registered objective."""

from __future__ import annotations

import math

import pytest
import torch

from modalab import registry
from modalab.align.losses import hard_negative_info_nce, info_nce
from test_align_losses import _directions, _lse, _symmetric_mean, check, emb, random_mask, rel_err


def ref_added(img, txt, s, k, weight, mask=None):
    """Row loss: -log(e^p / (e^p + sum_valid e^n + weight * sum_topk e^n)), loops only."""
    rows = []
    for row, p, ex, d in _directions(img, txt, s, mask):
        cand = [j for j in range(len(row)) if j != p and not ex[j]]
        hard = sorted(cand, key=lambda j: (-row[j].item(), j))[:k]
        terms = [row[p]] + [row[j] for j in cand] + [row[j] + math.log(weight) for j in hard]
        rows.append((_lse(terms) - row[p], d))
    return _symmetric_mean(rows, img.shape[0])


@pytest.mark.parametrize("k", [1, 3, 10])
@pytest.mark.parametrize("weight", [1.0, 0.25, 3.0])
@pytest.mark.parametrize("masked", [False, True])
def test_added_matches_float64_loop_reference(k, weight, masked):
    img, txt = emb(6, 4, 21), emb(6, 4, 22)
    mask = random_mask(6, 23) if masked else None
    check(lambda i, t, s: hard_negative_info_nce(i, t, s, k, mask=mask, mode="added", weight=weight),
          lambda i, t, s: ref_added(i, t, s, k, weight, mask), img, txt)


def test_added_is_in_batch_info_nce_plus_extra_mass_and_only_mode_unchanged():
    img, txt = emb(8, 4, 24), emb(8, 4, 25)
    base = info_nce(img, txt, 5.0)
    added = hard_negative_info_nce(img, txt, 5.0, 3, mode="added")
    assert added > base  # the mined negatives are extra terms of the same softmax
    tiny = hard_negative_info_nce(img, txt, 5.0, 3, mode="added", weight=1e-12)
    assert rel_err(tiny, base) < 1e-9  # weight -> 0 gives back in-batch InfoNCE
    only = hard_negative_info_nce(img, txt, 5.0, 7)  # default mode: positive + k hardest alone
    assert rel_err(only, base) < 1e-12


def test_added_rejects_bad_mode_and_weight():
    img, txt = emb(4, 3, 26), emb(4, 3, 27)
    with pytest.raises(ValueError, match="mode must be"):
        hard_negative_info_nce(img, txt, 5.0, 2, mode="both")
    with pytest.raises(ValueError, match="weight > 0"):
        hard_negative_info_nce(img, txt, 5.0, 2, mode="added", weight=0.0)


def test_registered_objective_passes_mode_weight_and_mask():
    entry = registry.get("loss", "hard_negative_info_nce")
    cfg = entry.schema.model_validate(
        {"name": "hard_negative_info_nce", "k": 2, "mode": "added", "weight": 0.5, "mask_same_label": True}
    )
    obj = entry.builder(cfg)
    img, txt = emb(6, 4, 28).float(), emb(6, 4, 29).float()
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(6, dtype=torch.bool)
    want = hard_negative_info_nce(img, txt, 4.0, 2, mask=same, mode="added", weight=0.5)
    assert torch.equal(obj(img, txt, torch.tensor(4.0), labels=labels), want)
