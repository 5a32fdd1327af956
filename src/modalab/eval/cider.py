"""CIDEr-D (Vedantam et al. 2015, the coco-caption / pycocoevalcap variant), computed in-house.

For each caption i with candidate c_i and references S_i = {s_i1, ..., s_im}:

    g_n(x)[w]  = tf_x(w) * (log |I| - log max(1, df(w)))      TF-IDF of the n-gram w in sentence x
    df(w)      = number of captions (images) i whose reference SET S_i contains w  (references only)
    CIDEr-D_n  = 1/m sum_j  exp(-(l(c) - l(s_j))^2 / (2 sigma^2))
                           * <min(g_n(c), g_n(s_j)), g_n(s_j)> / (||g_n(c)|| ||g_n(s_j)||)
    CIDEr-D    = 10 * mean over n = 1..4 of CIDEr-D_n;  the corpus score is the mean over captions.

``min`` is the clipping of candidate n-gram counts by reference counts (tf-idf weights of the same
n-gram share the idf, so clipping the weights clips the counts). sigma = 6. A norm of 0 leaves the
dot product undivided (it is then 0 too), as in pycocoevalcap.

Two details follow pycocoevalcap's ``cider_scorer.py`` rather than the paper's text (read there, not
copied): the length l(x) in the Gaussian penalty is the number of BIGRAMS of x (its ``length`` is
accumulated at n-gram index 1), which is the word count minus one for sentences of >= 1 word and 0
for an empty one; and |I| is the number of captions scored together (the corpus), so scores depend
on the corpus they are computed over. An n-gram absent from every reference set gets df = 1, i.e.
the full idf log |I|. Tokenisation is ``caption_metrics.tokenize`` (pycocoevalcap uses the Java PTB
tokenizer; on lower-case template captions without punctuation the two agree).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

from modalab.eval.caption_metrics import _check, ngrams, tokenize


def _counts(tokens: list[str], max_n: int) -> list[Counter]:
    return [ngrams(tokens, n) for n in range(1, max_n + 1)]


def _vector(counts: list[Counter], df: Counter, log_corpus: float) -> tuple[list[dict], list[float]]:
    """TF-IDF weights per order and their Euclidean norms."""
    vecs, norms = [], []
    for c in counts:
        v = {g: tf * (log_corpus - math.log(max(1.0, df[g]))) for g, tf in c.items()}
        vecs.append(v)
        norms.append(math.sqrt(sum(x * x for x in v.values())))
    return vecs, norms


def cider_d_scores(hyps: Sequence[str], refs: Sequence[Sequence[str]], max_n: int = 4,
                   sigma: float = 6.0) -> list[float]:
    """Per-caption CIDEr-D of ``hyps`` (one string each) against their reference lists."""
    _check(hyps, refs)
    if sigma <= 0 or max_n < 1:
        raise ValueError(f"cider_d: need sigma > 0 and max_n >= 1, got sigma={sigma}, max_n={max_n}")
    hyp_counts = [_counts(tokenize(h), max_n) for h in hyps]
    ref_counts = [[_counts(tokenize(r), max_n) for r in rs] for rs in refs]
    df: Counter = Counter()
    for rc in ref_counts:  # document frequency: once per caption whose reference set holds the n-gram
        df.update({g for r in rc for c in r for g in c})
    log_corpus = math.log(float(len(hyps))) if hyps else 0.0
    scores = []
    for hc, rcs in zip(hyp_counts, ref_counts):
        vh, nh = _vector(hc, df, log_corpus)
        len_h = sum(hc[1].values()) if max_n > 1 else 0  # bigram count (pycocoevalcap's length)
        total = 0.0
        for rc in rcs:
            vr, nr = _vector(rc, df, log_corpus)
            len_r = sum(rc[1].values()) if max_n > 1 else 0
            penalty = math.exp(-((len_h - len_r) ** 2) / (2 * sigma ** 2))
            per_n = 0.0
            for n in range(max_n):
                dot = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vh[n].items())
                if nh[n] != 0 and nr[n] != 0:
                    dot /= nh[n] * nr[n]
                per_n += dot * penalty
            total += per_n / max_n
        scores.append(10.0 * total / len(rcs))
    return scores


def cider_d(hyps: Sequence[str], refs: Sequence[Sequence[str]], max_n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D: the mean of :func:`cider_d_scores` (0.0 for an empty corpus)."""
    s = cider_d_scores(hyps, refs, max_n, sigma)
    return sum(s) / len(s) if s else 0.0
