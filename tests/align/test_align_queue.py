"""Negative queue: FIFO order, wrap-around, no self-positives, state round trip, momentum
encoder, and ``queue_info_nce`` against a loop reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modalab.align.losses import info_nce
from modalab.align.objectives_extended import QueueInfoNCE
from modalab.align.queue import MomentumEncoder, NegativeQueue, queue_info_nce, sample_ids


def rows(start, n, d=2):
    """(n, d) rows whose first column is their global index."""
    x = torch.zeros(n, d)
    x[:, 0] = torch.arange(start, start + n, dtype=torch.float32)
    return x


def test_fifo_and_wrap_around():
    q = NegativeQueue(size=5, dim=2)
    assert len(q) == 0 and q.features().shape == (0, 2)
    q.enqueue(rows(0, 3), ids=torch.arange(0, 3))
    assert q.ordered()[:, 0].tolist() == [0, 1, 2] and int(q.ptr) == 3
    q.enqueue(rows(3, 4), ids=torch.arange(3, 7))  # wraps: 3, 4 at the end, 5, 6 at the start
    assert len(q) == 5 and int(q.ptr) == 2
    assert q.queue[:, 0].tolist() == [5, 6, 2, 3, 4]
    assert q.ordered()[:, 0].tolist() == [2, 3, 4, 5, 6]  # oldest first
    assert q.ids.tolist() == [5, 6, 2, 3, 4]
    q.enqueue(rows(7, 12), ids=torch.arange(7, 19))  # more than the capacity: keep the last 5
    assert q.ordered()[:, 0].tolist() == [14, 15, 16, 17, 18]
    for step in range(7):  # many small steps (wrapping each time) keep exact FIFO order
        q.enqueue(rows(19 + 2 * step, 2))
    assert q.ordered()[:, 0].tolist() == [28, 29, 30, 31, 32]


def test_sample_draws_distinct_filled_rows():
    q = NegativeQueue(size=10, dim=2)
    q.enqueue(rows(0, 6))
    g = torch.Generator().manual_seed(0)
    out = q.sample(4, generator=g)
    vals = out[:, 0].tolist()
    assert len(set(vals)) == 4 and all(0 <= v < 6 for v in vals)
    assert q.sample(100).shape == (6, 2)


def test_exclusion_mask_by_id_and_label():
    q = NegativeQueue(size=4, dim=2)
    q.enqueue(rows(0, 3), ids=torch.tensor([10, 11, 12]), labels=torch.tensor([0, 1, -1]))
    m = q.exclusion_mask(ids=torch.tensor([11, 99]), labels=torch.tensor([5, 0]))
    assert m.tolist() == [[False, True, False], [True, False, False]]
    assert q.exclusion_mask() is None


def test_state_round_trip_and_lazy_objective_queues():
    q = NegativeQueue(size=4, dim=3)
    q.enqueue(torch.randn(6, 3), ids=torch.arange(6), labels=torch.arange(6) % 2)
    fresh = NegativeQueue(size=4, dim=3)
    fresh.load_state_dict(q.state_dict())
    for name in ("queue", "ids", "labels", "ptr", "count"):
        assert torch.equal(getattr(fresh, name), getattr(q, name))
    x = torch.randn(3, 3)
    q.enqueue(x)
    fresh.enqueue(x)
    assert torch.equal(fresh.ordered(), q.ordered())
    # an objective restored before its first call recreates its queues from the checkpoint
    obj = QueueInfoNCE(size=8)
    obj(F.normalize(torch.randn(4, 3), dim=1), F.normalize(torch.randn(4, 3), dim=1), torch.tensor(10.0))
    restored = QueueInfoNCE(size=8)
    restored.load_state_dict(obj.state_dict())
    assert torch.equal(restored.text_queue.ordered(), obj.text_queue.ordered())


def test_objective_never_sees_its_own_positives():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(4, 3), dim=1), F.normalize(torch.randn(4, 3), dim=1)
    ids = sample_ids(["a", "b", "c", "d"])
    obj = QueueInfoNCE(size=16)
    first = obj(img, txt, torch.tensor(10.0), ids=ids)
    assert torch.allclose(first, info_nce(img, txt, 10.0))  # empty queue: the batch is not in it
    assert len(obj.image_queue) == 4  # enqueued after the loss
    again = obj(img, txt, torch.tensor(10.0), ids=ids)  # each anchor's own stored copy is excluded
    own = torch.eye(4, dtype=torch.bool)
    assert torch.allclose(again, queue_info_nce(img, txt, 10.0, txt, img, queue_mask=own))
    assert again > first  # the other samples' stored rows are real extra negatives
    assert len(obj.image_queue) == 8
    obj.eval()
    obj(img, txt, torch.tensor(10.0))
    assert len(obj.image_queue) == 8  # no enqueue in eval mode


def ref_queue(img, txt, s, qt, qi, mask, qmask):
    b = img.shape[0]
    total = 0.0
    for direction, anchors, others, queue in (("i2t", img, txt, qt), ("t2i", txt, img, qi)):
        for i in range(b):
            terms = []
            for j in range(b):
                pair = (i, j) if direction == "i2t" else (j, i)
                if j == i or mask is None or not mask[pair]:
                    terms.append(s * (anchors[i] * others[j]).sum())
            for r in range(queue.shape[0]):
                if qmask is None or not qmask[i, r]:
                    terms.append(s * (anchors[i] * queue[r]).sum())
            pos = s * (anchors[i] * others[i]).sum()
            m = max(t.item() for t in terms)
            total = total + (m + torch.log(sum(torch.exp(t - m) for t in terms)) - pos) / (2 * b)
    return total


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("masked", [False, True])
def test_queue_info_nce_matches_reference(dtype, tol, masked):
    g = torch.Generator().manual_seed(1)
    base = [F.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=1) for n in (4, 4, 5, 5)]
    mask = qmask = None
    if masked:
        mask = torch.zeros(4, 4, dtype=torch.bool)
        mask[0, :] = mask[:, 0] = True
        qmask = torch.rand(4, 5, generator=g) < 0.5
        qmask[0] = True  # row 0 keeps only its positive
    fast = [x.to(dtype).clone().requires_grad_() for x in base]
    out = queue_info_nce(fast[0], fast[1], 8.0, fast[2], fast[3], mask=mask, queue_mask=qmask)
    out.backward()
    ref_in = [x.clone().requires_grad_() for x in base]
    ref = ref_queue(ref_in[0], ref_in[1], 8.0, ref_in[2], ref_in[3], mask, qmask)
    ref.backward()
    assert abs(out.item() - ref.item()) / ref.item() < tol
    for a, r in zip(fast, ref_in):
        assert ((a.grad.double() - r.grad).norm() / r.grad.norm()).item() < tol


def test_momentum_encoder_ema():
    torch.manual_seed(2)
    online = torch.nn.Linear(3, 2)
    key = MomentumEncoder(online, momentum=0.9)
    before = key.encoder.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    key.update(online)
    assert torch.allclose(key.encoder.weight, 0.9 * before + 0.1 * online.weight)
    assert not key.encoder.weight.requires_grad
    out = key(torch.randn(5, 3))
    assert out.shape == (5, 2) and not out.requires_grad


def test_sample_ids_are_stable_and_non_negative():
    a, b = sample_ids(["x", "y", "x"]), sample_ids(["x"])
    assert a[0] == a[2] == b[0] and a[0] != a[1] and (a >= 0).all()
