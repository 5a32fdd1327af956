"""CIDEr-D against values computed by hand on tiny corpora (idf = log |I| - log df, L = log 2 below)."""

import math

import pytest

from modalab.eval.cider import cider_d, cider_d_scores


def test_exact_match_and_disjoint_by_hand():
    # df: a in both reference sets -> idf 0; b, d, (a b), (a d) in one -> idf log 2; |I| = 2
    # caption 1 equals its reference: cosine 1 for n = 1, 2; orders 3, 4 are empty (0) -> 10 * 2/4
    # caption 2 shares only "a", whose idf is 0 -> 0
    s = cider_d_scores(["a b", "a c"], [["a b"], ["a d"]])
    assert s == pytest.approx([5.0, 0.0], abs=1e-12)
    assert cider_d(["a b", "a c"], [["a b"], ["a d"]]) == pytest.approx(2.5, abs=1e-12)


def test_clipping_and_length_penalty_by_hand():
    # caption 1: hyp "x x" -> g1 = {x: 2L}; ref "x y" -> {x: L, y: L}. Clipped dot = min(2L, L) * L = L^2,
    #   norms 2L and sqrt(2) L -> 1 / (2 sqrt 2); unclipped it would be 1 / sqrt 2. Bigrams differ -> 0.
    # caption 2: hyp "z" (0 bigrams) vs ref "z w" (1 bigram): penalty exp(-1 / 72); unigram cosine
    #   L^2 / (L * sqrt(2) L) = 1 / sqrt 2; the hypothesis has no bigram (norm 0) -> 0.
    s = cider_d_scores(["x x", "z"], [["x y"], ["z w"]])
    assert s[0] == pytest.approx(10 * (1 / (2 * math.sqrt(2))) / 4, rel=1e-12)
    assert s[1] == pytest.approx(10 * math.exp(-1 / 72) * (1 / math.sqrt(2)) / 4, rel=1e-12)


def test_perfect_match_of_four_gram_sentence_scores_ten():
    # every n-gram of each caption is unique to its reference set (df = 1): cosine 1 for n = 1..4
    hyps = ["a beep then a chirp", "rain over steady noise now"]
    assert cider_d_scores(hyps, [[h] for h in hyps]) == pytest.approx([10.0, 10.0], rel=1e-12)


def test_document_frequency_counts_each_caption_once_and_refs_average():
    # caption 1 has two references that both contain "p q": df(p) = 1 (one caption), not 2.
    # |I| = 2; idf of every n-gram here is log 2 (none occurs in caption 2's references).
    hyps, refs = ["p q", "m n"], [["p q", "p q r"], ["m n"]]
    s = cider_d_scores(hyps, refs)
    # vs "p q": cosine 1 for n = 1, 2 -> 2/4. vs "p q r": unigram cos = 2L^2 / (sqrt2 L * sqrt3 L) =
    # 2/sqrt6; bigram cos = L^2 / (L * sqrt2 L) = 1/sqrt2; bigram counts 1 vs 2 -> penalty exp(-1/72)
    second = math.exp(-1 / 72) * (2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4
    assert s[0] == pytest.approx(10 * (0.5 + second) / 2, rel=1e-12)
    assert s[1] == pytest.approx(5.0, rel=1e-12)


def test_ngram_in_every_reference_set_carries_no_weight():
    # "the" is in both reference sets -> idf 0: a hypothesis of only "the" scores 0
    assert cider_d_scores(["the", "the"], [["the cat"], ["the dog"]]) == [0.0, 0.0]


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="reference lists"):
        cider_d(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="sigma"):
        cider_d(["a"], [["a"]], sigma=0.0)
