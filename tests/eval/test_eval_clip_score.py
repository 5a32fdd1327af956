"""CLIP score and R-precision: hand-computed cosines, the two scale conventions, and the in-house
score encoder trained on the digits ranking matched captions above mismatched ones."""

import math

import pytest
import torch

from modalab.data.dataset import stratified_split
from modalab.data.sources.digits import caption, load_digit_images
from modalab.eval.clip_score import (
    HESSEL_W, TORCHMETRICS_W, clip_score, clip_score_per_pair, mismatched_negatives, r_precision,
)
from modalab.eval.score_encoder import ScoreEncoderConfig, cached_score_encoder
from modalab.text.tokenizer import WordTokenizer

torch.set_num_threads(1)


def test_clip_score_on_hand_computed_cosines():
    img = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    txt = torch.tensor([[1.0, 1.0], [0.0, 5.0], [-1.0, 0.0]])  # cos = 1/sqrt2, 1, -1
    per = clip_score_per_pair(img, txt)
    assert per.tolist() == pytest.approx([2.5 / math.sqrt(2), 2.5, 0.0])  # negative cos clamps to 0
    assert clip_score(img, txt) == pytest.approx((2.5 / math.sqrt(2) + 2.5) / 3)
    assert HESSEL_W == 2.5
    assert clip_score(img, txt, w=TORCHMETRICS_W) == pytest.approx(40 * clip_score(img, txt))


def test_r_precision_on_hand_built_candidates():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.1], [1.0, 0.0]])
    neg = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]],     # image 0: own text wins
                        [[0.0, 1.0], [1.0, 1.0]]])     # image 1: a negative (cos 1) beats own (cos 0)
    assert r_precision(img, txt, neg) == 0.5
    with pytest.raises(ValueError, match=r"\(N=2, R - 1, E=2\)"):
        r_precision(img, txt, neg[:1])
    with pytest.raises(ValueError, match="one shape"):
        clip_score(img, txt[:1])


def test_mismatched_negatives_never_share_the_class():
    pool = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    idx = mismatched_negatives(torch.tensor([0, 3, 1]), pool, count=3, seed=0)
    assert idx.shape == (3, 3)
    for y, row in zip([0, 3, 1], idx):
        assert (pool[row] != y).all() and len(set(row.tolist())) == 3
    with pytest.raises(ValueError, match="class 0 has only 5"):
        mismatched_negatives(torch.tensor([0]), pool, count=6)


def test_in_house_score_encoder_separates_matched_from_mismatched(tmp_path):
    images, labels = load_digit_images(16)
    tr, te = stratified_split(labels.tolist(), len(labels), 0.25, 0)
    caps = [caption(int(y), i % 3) for i, y in enumerate(labels.tolist())]
    tok = WordTokenizer.build(caps, 10)
    ids = tok(caps)
    cfg = ScoreEncoderConfig(steps=120, width=16)
    enc = cached_score_encoder(images[tr], ids[tr], labels[tr], tok.vocab_size, cfg, tmp_path)
    img, txt = enc.embed(images=images[te]), enc.embed(ids=ids[te])
    wrong = ids[te][torch.roll(torch.arange(len(te)), 1)]  # another caption (mostly another class)
    rolled_labels = labels[te][torch.roll(torch.arange(len(te)), 1)]
    off = rolled_labels != labels[te]
    matched, mismatched = clip_score(img, txt), clip_score(img[off], enc.embed(ids=wrong)[off])
    assert matched > mismatched + 0.5
    neg = enc.embed(ids=ids[te])[mismatched_negatives(labels[te], labels[te], count=9, seed=0)]  # (N, 9, E)
    assert r_precision(img, txt, neg) > 0.8
    again = cached_score_encoder(images[tr], ids[tr], labels[tr], tok.vocab_size, cfg, tmp_path)
    assert torch.equal(again.embed(images=images[te][:4]), img[:4])  # reloaded from the cache
    assert len(list(tmp_path.glob("score_encoder_*.safetensors"))) == 1
    with pytest.raises(ValueError, match="exactly one"):
        enc.embed()
