"""Caption n-gram metrics computed in-house: corpus BLEU-4 and ROUGE-L (no Java, no downloads).

Tokenisation: lower-case, punctuation removed, split on whitespace (``tokenize``).

- ``corpus_bleu`` (Papineni et al. 2002, as in coco-caption): clipped n-gram precisions summed over
  the corpus, geometric mean over n = 1..4 with equal weights, brevity penalty
  ``exp(1 - r / c)`` when the total hypothesis length c is below r, the sum over hypotheses of the
  reference length closest to each hypothesis (ties: the shorter). Any zero precision gives 0.
- ``rouge_l`` (Lin 2004, as in coco-caption): per caption, P = max LCS / |hyp| and R = max LCS /
  |ref| over references, F = (1 + b^2) P R / (R + b^2 P) with b = 1.2; averaged over captions.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

_PUNCT = re.compile(r"[^\w\s]")


def tokenize(text: str) -> list[str]:
    return _PUNCT.sub(" ", text.lower()).split()


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1))


def _check(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference lists")
    for i, r in enumerate(refs):
        if isinstance(r, str) or not r:
            raise ValueError(f"references[{i}] must be a non-empty list of strings, got {r!r}")


def corpus_bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` of ``hyps`` against lists of references (one list per hypothesis)."""
    _check(hyps, refs)
    matched, total = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, rs in zip(hyps, refs):
        h = tokenize(hyp)
        rt = [tokenize(r) for r in rs]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rt)[1]
        for n in range(1, max_n + 1):
            hc = ngrams(h, n)
            best: Counter = Counter()
            for r in rt:
                best |= ngrams(r, n)  # max count of each n-gram over the references
            matched[n - 1] += sum(min(c, best[g]) for g, c in hc.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    if min(matched) == 0 or hyp_len == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matched, total)) / max_n
    bp = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(log_p)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programme, O(|a| |b|))."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyps: Sequence[str], refs: Sequence[Sequence[str]], beta: float = 1.2) -> float:
    """Mean ROUGE-L F-score (coco-caption's definition) of ``hyps`` against their references."""
    _check(hyps, refs)
    scores = []
    for hyp, rs in zip(hyps, refs):
        h = tokenize(hyp)
        lcs = [(lcs_length(h, tokenize(r)), len(tokenize(r))) for r in rs]
        p = max((c / len(h) if h else 0.0) for c, _ in lcs)
        r = max((c / n if n else 0.0) for c, n in lcs)
        scores.append(0.0 if p == 0 or r == 0 else (1 + beta ** 2) * p * r / (r + beta ** 2 * p))
    return sum(scores) / len(scores) if scores else 0.0
