"""Region pooling (align/regions.py) and the regional level of multi_granularity against plain
loop references, in float64: values and gradients; identical phrases masked as false negatives."""

import math

import pytest
import torch

from modalab.align.fine_grained import multi_granularity_terms
from modalab.align.regions import box_patch_weights, pool_regions


def _pool_loop(tokens, boxes, mask, grid, p):
    """Plain reference: for each real box, the mean of the patch tokens whose centres lie inside."""
    b, r = mask.shape
    out = torch.zeros(b, r, tokens.shape[2], dtype=tokens.dtype)
    valid = torch.zeros(b, r, dtype=torch.bool)
    for i in range(b):
        for k in range(r):
            if not mask[i, k]:
                continue
            x0, y0, x1, y1 = boxes[i, k].tolist()
            members = [row * grid[1] + col for row in range(grid[0]) for col in range(grid[1])
                       if x0 <= (col + 0.5) * p < x1 and y0 <= (row + 0.5) * p < y1]
            if members:
                out[i, k] = sum(tokens[i, n] for n in members) / len(members)
                valid[i, k] = True
    return out, valid


def _case():
    g = torch.Generator().manual_seed(0)
    grid, p = (4, 5), 4  # 16 x 20 pixel image
    tokens = torch.randn(3, 20, 6, generator=g, dtype=torch.float64)
    boxes = torch.tensor([
        [[0, 0, 8, 8], [3, 5, 20, 16], [0, 0, 0, 0]],        # two boxes and a pad
        [[1.5, 1.0, 9.5, 6.0], [0, 0, 1, 1], [12, 0, 20, 4]],  # fractional; one holds no centre
        [[0, 0, 20, 16], [17, 13, 19, 15], [7, 7, 9, 9]],     # whole image; two tiny boxes, one between centres
    ], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, True, True], [True, True, True]])
    return tokens, boxes, mask, grid, p


def test_pool_regions_matches_the_loop_reference_values_and_gradients():
    tokens, boxes, mask, grid, p = _case()
    ref, ref_valid = _pool_loop(tokens, boxes, mask, grid, p)
    t1 = tokens.clone().requires_grad_(True)
    got, valid = pool_regions(t1, boxes, mask, grid, p)
    assert torch.equal(valid, ref_valid)
    assert valid.tolist() == [[True, True, False], [True, False, True], [True, True, False]]
    torch.testing.assert_close(got[valid], ref[valid], rtol=0, atol=1e-12)
    assert got[~valid].abs().max() == 0
    w = torch.randn(got.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (got * w).sum().backward()
    t2 = tokens.clone().requires_grad_(True)
    ref2, _ = _pool_loop(t2, boxes, mask, grid, p)
    (ref2 * w).sum().backward()
    torch.testing.assert_close(t1.grad, t2.grad, rtol=0, atol=1e-12)
    assert t1.grad.abs().sum() > 0


def test_box_patch_weights_centres_and_errors():
    w = box_patch_weights(torch.tensor([[[4, 0, 12, 4]]]), (2, 4), 4)  # centres x = 2, 6, 10, 14
    assert w.dtype == torch.float32 and w[0, 0].tolist() == [0, 1, 1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match=r"\(B, R, 4\)"):
        box_patch_weights(torch.zeros(2, 4), (2, 2), 4)
    with pytest.raises(ValueError, match="patch dropout"):
        pool_regions(torch.zeros(1, 7, 3), torch.zeros(1, 1, 4), torch.ones(1, 1, dtype=torch.bool), (2, 4), 4)


def _regional_loop(region, phrases, pidx, scale):
    """Symmetric InfoNCE over M region-phrase pairs; pairs with the same phrase are left out of each
    other's negatives (the positive itself stays)."""
    m = region.shape[0]
    s = scale * region @ phrases[pidx].T  # (M, M)
    total = 0.0
    for i in range(m):
        keep = [j for j in range(m) if j == i or pidx[j] != pidx[i]]
        total = total - s[i, i] + torch.logsumexp(s[i, keep], 0)  # region -> phrase
        total = total - s[i, i] + torch.logsumexp(s[keep, i], 0)  # phrase -> region
    return total / (2 * m)


def test_regional_level_matches_the_loop_reference_with_repeated_phrases():
    g = torch.Generator().manual_seed(2)
    norm = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    region = norm(torch.randn(7, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    phrases = norm(torch.randn(4, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    pidx = torch.tensor([0, 1, 0, 2, 3, 1, 0])
    img, txt = (norm(torch.randn(3, 5, generator=g, dtype=torch.float64)),
                norm(torch.randn(3, 5, generator=g, dtype=torch.float64)))
    terms = multi_granularity_terms(img, txt, 10.0, region_emb=region, phrase_emb=phrases,
                                    region_index=torch.arange(7), phrase_index=pidx)
    ref = _regional_loop(region, phrases, pidx, 10.0)
    torch.testing.assert_close(terms["regional"], ref, rtol=1e-12, atol=1e-12)
    ga = torch.autograd.grad(terms["regional"], (region, phrases))
    gb = torch.autograd.grad(_regional_loop(region, phrases, pidx, 10.0), (region, phrases))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_identical_phrases_are_not_negatives():
    """Two regions described by the same phrase, perfectly aligned: masked, the loss goes to 0;
    counted as negatives, each would see its own positive twice (>= log 2)."""
    e = torch.eye(4, dtype=torch.float64)
    region = e[[0, 0, 1, 2]]  # regions 0 and 1 both show "a small red 3"
    phrases = e[[0, 1, 2]]
    pidx = torch.tensor([0, 0, 1, 2])
    masked = multi_granularity_terms(e[:2], e[:2], 50.0, region_emb=region, phrase_emb=phrases,
                                     region_index=torch.arange(4), phrase_index=pidx)["regional"]
    plain = multi_granularity_terms(e[:2], e[:2], 50.0, region_emb=region, phrase_emb=phrases[pidx],
                                    region_index=torch.arange(4), phrase_index=torch.arange(4))["regional"]
    assert masked.item() < 1e-9
    torch.testing.assert_close(plain, torch.tensor(0.5 * math.log(2), dtype=torch.float64), rtol=1e-9, atol=1e-9)
