"""SigLIP with class-level captions: same-label pairs dropped (``mask``) or labelled +1
(``positive``), checked in value and gradient against a float64 loop over the paper's formula
(Zhai et al. 2023: ``-sum_ij log sigmoid(z_ij (t x_i . y_j + b)) / B``), and the registered
objective's ``loss.same_label`` switch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modalab.align.losses import same_label_mask, siglip
from modalab.align.objectives_clip import TiledContrastive


def ref_siglip(img, txt, t, b, labels=None, same="negative"):
    """Loop reference: z_ij = +1 on the diagonal; same-label pairs -1 (negative), skipped
    (ignore) or +1 (positive); everything else -1. Divided by B, never by the pair count."""
    n = img.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            same_pair = labels is not None and i != j and int(labels[i]) == int(labels[j])
            if same_pair and same == "ignore":
                continue
            z = 1.0 if (i == j or (same_pair and same == "positive")) else -1.0
            logit = t * (img[i] * txt[j]).sum() + b
            total = total + torch.log1p(torch.exp(-z * logit))  # -log sigmoid(z * logit)
    return total / n


def _inputs(seed: int, n: int = 7, d: int = 5):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])[:n]
    return img.requires_grad_(), txt.requires_grad_(), labels


def _grads(fn, img, txt, t, b):
    t = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    loss = fn(img, txt, t, b)
    gi, gt, gs, gb = torch.autograd.grad(loss, (img, txt, t, b))
    return loss.detach(), gi, gt, gs, gb


@pytest.mark.parametrize("same", ["negative", "ignore", "positive"])
@pytest.mark.parametrize("t,b", [(10.0, -10.0), (3.0, 1.5)])
def test_value_and_gradients_match_float64_reference(same, t, b):
    img, txt, labels = _inputs(1)
    mask = same_label_mask(labels)
    kw = {"negative": {}, "ignore": {"mask": mask}, "positive": {"positive": mask}}[same]
    got = _grads(lambda i, x, s, c: siglip(i, x, s, c, **kw), img, txt, t, b)
    want = _grads(lambda i, x, s, c: ref_siglip(i, x, s, c, labels, same), img, txt, t, b)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12)


def test_positive_at_the_papers_initialisation_has_the_closed_form():
    """Orthogonal embeddings: every logit is b = -10. With P positive pairs (diagonal and same
    label) and N negatives the loss is (P softplus(10) + N softplus(-10)) / B."""
    n = 6
    emb = torch.eye(2 * n, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    pos = int((labels[:, None] == labels[None, :]).sum())  # 4 + 9 + 1 = 14, diagonal included
    got = siglip(emb[:n], emb[n:], 10.0, -10.0, positive=same_label_mask(labels))
    want = (pos * F.softplus(torch.tensor(10.0, dtype=torch.float64))
            + (n * n - pos) * F.softplus(torch.tensor(-10.0, dtype=torch.float64))) / n
    assert abs(got.item() - want.item()) < 1e-12


def test_a_pair_both_masked_and_positive_is_an_error():
    img, txt, labels = _inputs(2)
    mask = same_label_mask(labels)
    with pytest.raises(ValueError, match="both as masked and as positive"):
        siglip(img, txt, 10.0, -10.0, mask=mask, positive=mask)


@pytest.mark.parametrize("same", ["ignore", "positive"])
def test_objective_switch_matches_the_functional_loss(same):
    img, txt, labels = _inputs(3)
    obj = TiledContrastive("siglip", impl="naive", mask_same_label=True, same_label=same)
    s, b = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    got = obj(img, txt, logit_scale=s, logit_bias=b, labels=labels)
    kw = {"mask": same_label_mask(labels)} if same == "ignore" else {"positive": same_label_mask(labels)}
    assert torch.allclose(got, siglip(img, txt, s, b, **kw), rtol=0, atol=1e-12)
    # without mask_same_label the labels are not used: same-label pairs stay negatives
    plain = TiledContrastive("siglip", impl="naive", same_label=same)
    assert torch.allclose(plain(img, txt, logit_scale=s, logit_bias=b, labels=labels),
                          siglip(img, txt, s, b), rtol=0, atol=1e-12)


def test_positive_is_refused_where_it_is_not_implemented():
    with pytest.raises(ValueError, match="only implemented for the siglip loss"):
        TiledContrastive("info_nce", mask_same_label=True, same_label="positive")
    with pytest.raises(ValueError, match="only implemented for the siglip loss"):
        TiledContrastive("siglip", impl="tiled", mask_same_label=True, same_label="positive")
    img, txt, labels = _inputs(4)
    auto = TiledContrastive("siglip", impl="auto", auto_threshold=4, mask_same_label=True,
                            same_label="positive")
    with pytest.raises(ValueError, match="full-logits SigLIP"):
        auto(img, txt, logit_scale=torch.tensor(10.0), logit_bias=torch.tensor(-10.0), labels=labels)
