"""BLIP-2's Q-Former masks (ITC uni-modal, ITM bi-directional, ITG multimodal causal) and objectives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modalab.align.blip2 import hard_negatives, itc_loss, itc_similarity
from modalab.fusion.qformer_blip2 import Blip2QFormer, blip2_mask


def test_masks_per_objective_match_blip2_figure_2():
    q, text_mask = 2, torch.tensor([[True, True, True]])
    itc, itm, itg = (blip2_mask(q, text_mask, m)[0] for m in ("itc", "itm", "itg"))
    Q, T = slice(0, 2), slice(2, 5)
    # queries see queries in every mode; ITC: no query<->text; ITM: all; ITG: text sees queries
    assert itc[Q, Q].all() and not itc[Q, T].any() and not itc[T, Q].any() and itc[T, T].all()
    assert itm.all()
    assert itg[Q, Q].all() and not itg[Q, T].any() and itg[T, Q].all()
    assert torch.equal(itg[T, T], torch.ones(3, 3, dtype=torch.bool).tril())


def test_padded_text_keys_are_never_attended():
    m = blip2_mask(2, torch.tensor([[True, True, False]]), "itm")[0]
    assert not m[:, 4].any() and m[:, :4].all()


def _qformer() -> Blip2QFormer:
    torch.manual_seed(0)
    return Blip2QFormer(enc_dim=12, dim=16, depth=2, heads=2, num_queries=3, vocab_size=20,
                        max_text_len=8, cross_every=1).eval()


def test_itc_joint_pass_equals_separate_unimodal_passes():
    qf, img, tok = _qformer(), torch.randn(2, 5, 12), torch.randint(4, 20, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        q_joint, t_joint = qf(img, tok, mask, "itc")
        q_alone = qf.image_queries(img)
        t_alone = qf(None, tok, mask, "itc")[1]
    torch.testing.assert_close(q_joint, q_alone, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(t_joint, t_alone, atol=1e-6, rtol=1e-6)


def test_itg_is_causal_over_text_and_grounded_in_the_image_while_itm_lets_queries_read_text():
    qf, img, tok = _qformer(), torch.randn(1, 5, 12), torch.randint(4, 20, (1, 6))
    other = tok.clone()
    other[0, 4:] = (tok[0, 4:] + 1 - 4) % 16 + 4  # change the last two tokens only
    mask = torch.ones(1, 6, dtype=torch.bool)
    with torch.no_grad():
        qa, ta = qf(img, tok, mask, "itg")
        qb, tb = qf(img, other, mask, "itg")
        _, tc = qf(img * 2 + 1, tok, mask, "itg")
        ma, _ = qf(img, tok, mask, "itm")
        mb, _ = qf(img, other, mask, "itm")
    torch.testing.assert_close(ta[:, :4], tb[:, :4])  # earlier positions never see later tokens
    assert not torch.allclose(ta[:, 4:], tb[:, 4:])
    torch.testing.assert_close(qa, qb)  # ITG queries do not read the text
    assert not torch.allclose(ta, tc)  # the text reads the image through the queries
    assert not torch.allclose(ma, mb)  # ITM queries do read the text


def test_hard_negative_mining_picks_the_most_similar_non_matching_pair():
    sim = torch.tensor([[0.9, 0.8, 0.1, 0.7],
                        [0.2, 0.9, 0.6, 0.3],
                        [0.5, 0.4, 0.9, 0.95],
                        [0.1, 0.2, 0.3, 0.9]])
    labels = torch.tensor([0, 1, 2, 2])  # items 2 and 3 show the same class: never negatives of each other
    match = labels[:, None] == labels[None]
    neg_text, neg_image, has_text, has_image = hard_negatives(sim, match)
    assert neg_text.tolist() == [1, 2, 0, 1]  # row 2: 0.95 is a match (same class), next is 0.5
    assert neg_image.tolist() == [2, 0, 1, 0]
    assert has_text.all() and has_image.all()
    _, _, has_text, _ = hard_negatives(sim, torch.ones(4, 4, dtype=torch.bool))
    assert not has_text.any()  # no non-matching candidate: the row gives no negative


def test_itc_similarity_is_the_max_over_queries_and_the_loss_is_infonce_on_the_diagonal():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(3, 4, 8), dim=-1)
    t = F.normalize(torch.randn(5, 8), dim=-1)
    sim = itc_similarity(q, t)
    ref = torch.stack([torch.stack([(q[i] @ t[j]).max() for j in range(5)]) for i in range(3)])
    torch.testing.assert_close(sim, ref)
    logits = torch.randn(4, 4, dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.bool)
    plain = (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4))) / 2
    torch.testing.assert_close(itc_loss(logits, eye), plain)
