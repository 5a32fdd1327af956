import math

import pytest

from modalab.eval.caption_metrics import corpus_bleu, lcs_length, rouge_l, tokenize


def test_bleu4_hand_computed():
    # clipped precisions 5/6, 3/5, 2/4, 1/3 (worked out by hand); equal lengths, so no brevity penalty
    got = corpus_bleu(["The cat sat on the mat."], [["the cat sat on a mat"]])
    assert abs(got - (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25) < 1e-12
    assert corpus_bleu(["a beep then a chirp"], [["a beep then a chirp"]]) == pytest.approx(1.0)
    assert corpus_bleu(["a chirp"], [["a beep"]]) == 0.0  # no matching bigram


def test_bleu_brevity_penalty_closest_reference_and_clipping():
    # hyp of 4 tokens, references of 6 and 9: closest is 6 -> BP = exp(1 - 6/4)
    hyp, refs = "a b c d", ["a b c d e f", "a b c d e f g h i"]
    assert corpus_bleu([hyp], [refs]) == pytest.approx(math.exp(1 - 6 / 4))
    got2 = corpus_bleu(["the the the the"], [["the the cat dog"]], max_n=2)
    # p1 = 2/4 (clip), p2: bigrams "the the" x3 vs ref 1 -> 1/3; equal lengths
    assert got2 == pytest.approx(math.sqrt(2 / 4 * 1 / 3))


def test_rouge_l_hand_computed():
    assert lcs_length("a b c d".split(), "a c d b".split()) == 3
    assert rouge_l(["the cat sat on the mat"], [["the cat sat on a mat"]]) == pytest.approx(5 / 6)
    # LCS 2, P = 2/5, R = 1, beta 1.2: 2.44 * 0.4 / (1 + 1.44 * 0.4)
    assert rouge_l(["a beep then a chirp"], [["a beep"]]) == pytest.approx(2.44 * 0.4 / 1.576)
    # best reference counts; mean over captions
    assert rouge_l(["x y", "a b"], [["q", "x y"], ["c"]]) == pytest.approx(0.5)


def test_caption_metrics_errors_and_tokenize():
    assert tokenize("A beep, then a CHIRP.") == ["a", "beep", "then", "a", "chirp"]
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        corpus_bleu(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="references\\[0\\]"):
        rouge_l(["a"], ["a"])
