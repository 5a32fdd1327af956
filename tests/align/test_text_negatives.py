"""info_nce_text_negatives (NegCLIP): value and gradients against a per-row float64 reference;
no negatives = InfoNCE; the curriculum admits the levels one at a time."""

import math

import torch

from modalab.align.losses import info_nce
from modalab.align.text_negatives import TextNegativesInfoNCE, info_nce_text_negatives


def _reference(img, txt, neg, scale):
    b = img.shape[0]
    pool = torch.cat([txt, neg.reshape(-1, txt.shape[1])])  # every image sees every negative caption
    i2t = t2i = 0.0
    for i in range(b):
        row = [scale * float(img[i] @ t) for t in pool]
        i2t += math.log(sum(math.exp(v) for v in row)) - row[i]
        col = [scale * float(img[j] @ txt[i]) for j in range(b)]
        t2i += math.log(sum(math.exp(v) for v in col)) - col[i]
    return 0.5 * (i2t + t2i) / b


def _unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


def test_matches_reference_value_and_gradient():
    img, txt, neg = _unit(5, 8), _unit(5, 8), _unit(5, 3, 8)
    for t in (img, txt, neg):
        t.requires_grad_(True)
    loss = info_nce_text_negatives(img, txt, neg, 7.0)
    assert abs(float(loss.detach()) - _reference(img.detach(), txt.detach(), neg.detach(), 7.0)) < 1e-10
    assert torch.autograd.gradcheck(lambda a, b, c: info_nce_text_negatives(a, b, c, 7.0), (img, txt, neg))


def test_no_negatives_is_info_nce_and_mask():
    img, txt = _unit(6, 4), _unit(6, 4)
    empty = torch.zeros(6, 0, 4, dtype=torch.float64)
    assert torch.allclose(info_nce_text_negatives(img, txt, empty, 5.0), info_nce(img, txt, 5.0))
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True
    assert torch.allclose(info_nce_text_negatives(img, txt, empty, 5.0, mask=mask), info_nce(img, txt, 5.0, mask=mask))


def test_negatives_raise_the_loss_and_curriculum_levels():
    img, txt, neg = _unit(4, 8), _unit(4, 8), _unit(4, 3, 8)
    assert info_nce_text_negatives(img, txt, neg, 10.0) > info_nce_text_negatives(img, txt, neg[:, :0], 10.0)
    obj = TextNegativesInfoNCE("curriculum")
    used = []
    for p in (0.0, 0.3, 0.34, 0.7, 0.99):
        obj.set_progress(p)
        used.append(obj.used(3))
    assert used == [1, 1, 2, 3, 3] and TextNegativesInfoNCE("all").used(3) == 3
    obj.set_progress(0.5)
    assert torch.allclose(obj(img, txt, torch.tensor(10.0), neg_text_emb=neg),
                          info_nce_text_negatives(img, txt, neg[:, :2], 10.0))
