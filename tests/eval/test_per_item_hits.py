"""Per-item hits (saved for paired statistics) average to the aggregate metrics, ties included."""

import pytest
import torch

from modalab.eval.retrieval import retrieval_hits, retrieval_metrics
from modalab.eval.zeroshot import zeroshot_accuracy, zeroshot_hits


@pytest.mark.parametrize("match", ["label", "pair"])
def test_retrieval_hits_average_to_recall(match):
    g = torch.Generator().manual_seed(0)
    img = torch.randn(40, 8, generator=g).round()  # rounding makes ties
    txt = torch.randn(40, 8, generator=g).round()
    labels = torch.randint(0, 5, (40,), generator=g)
    agg = retrieval_metrics(img, txt, labels, match, ks=(1, 5))
    for k in (1, 5):
        hits = retrieval_hits(img, txt, labels, match, k)
        for key, h in hits.items():
            assert h.shape == (40,) and h.float().mean().item() == pytest.approx(agg[key])


def test_zeroshot_hits_average_to_accuracy():
    g = torch.Generator().manual_seed(1)
    img, cls = torch.randn(30, 6, generator=g).round(), torch.randn(4, 6, generator=g).round()
    labels = torch.randint(0, 4, (30,), generator=g)
    acc = zeroshot_accuracy(img, cls, labels, ks=(1, 3))
    assert zeroshot_hits(img, cls, labels, 1).float().mean().item() == pytest.approx(acc["zeroshot_top1"])
    assert zeroshot_hits(img, cls, labels, 3).float().mean().item() == pytest.approx(acc["zeroshot_top3"])
