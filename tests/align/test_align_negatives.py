"""Negative samplers: property tests (never the positive or a masked pair, right counts and
proportions, curriculum schedule) and ``sampled_info_nce`` against a loop reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from modalab import registry
from modalab.align.losses import info_nce
from modalab.align.negatives import (
    CurriculumNegatives,
    HardNegatives,
    InBatchNegatives,
    MixedNegatives,
    SemanticLevelNegatives,
    load_taxonomy,
    sampled_info_nce,
    semantic_level,
)

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)

# labels 0..8: two domains; parents group siblings
TAXONOMY = {
    0: ("animal", "dog"), 1: ("animal", "dog"), 2: ("animal", "cat"), 3: ("animal", "cat"),
    4: ("vehicle", "car"), 5: ("vehicle", "car"), 6: ("vehicle", "truck"), 7: ("vehicle", "truck"),
    8: ("vehicle", "bike"),
}


@st.composite
def problems(draw):
    b = draw(st.integers(1, 8))
    n = draw(st.integers(1, 12))
    k = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**16))
    p_mask = draw(st.sampled_from([0.0, 0.3, 0.9, 1.0]))
    g = torch.Generator().manual_seed(seed)
    sim = torch.randn(b, n, generator=g)
    pos = torch.randint(0, n, (b,), generator=g)
    mask = torch.rand(b, n, generator=g) < p_mask
    labels = torch.randint(0, 9, (b,), generator=g)
    cand = torch.randint(0, 9, (n,), generator=g)
    return sim, pos, k, mask, labels, cand, seed


SAMPLERS = {
    "in_batch": InBatchNegatives(),
    "hard": HardNegatives(),
    "hard_softmax": HardNegatives(temperature=0.5),
    "mixed": MixedNegatives(0.3),
    "curriculum": CurriculumNegatives(),
    "semantic": SemanticLevelNegatives(TAXONOMY, (0.5, 0.2, 0.3)),
}


def _allowed(sim, pos, mask, labels, cand, semantic):
    b, n = sim.shape
    ok = ~mask.clone()
    ok[torch.arange(b), pos] = False
    if semantic:
        ok &= labels[:, None] != cand[None, :]
    return ok


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@SETTINGS
@given(problem=problems(), progress=st.floats(0, 1))
def test_samplers_never_return_positive_or_masked(name, problem, progress):
    sim, pos, k, mask, labels, cand, seed = problem
    g = torch.Generator().manual_seed(seed)
    idx = SAMPLERS[name].sample(sim, pos, k, mask=mask, labels=labels, candidate_labels=cand,
                                progress=progress, generator=g)
    assert idx.shape == (sim.shape[0], k) and idx.dtype == torch.long
    ok = _allowed(sim, pos, mask, labels, cand, name == "semantic")
    for row in range(sim.shape[0]):
        got = [j for j in idx[row].tolist() if j >= 0]
        assert len(got) == len(set(got)), "duplicate negatives"
        assert all(ok[row, j] for j in got), "returned the positive or a masked pair"
        assert len(got) == min(k, int(ok[row].sum())), "did not fill up to k valid negatives"
        assert idx[row, len(got):].eq(-1).all(), "padding must come last"


@SETTINGS
@given(problem=problems())
def test_hard_returns_the_top_k_valid(problem):
    sim, pos, k, mask, *_ = problem
    idx = HardNegatives().sample(sim, pos, k, mask=mask)
    ok = _allowed(sim, pos, mask, None, None, False)
    for row in range(sim.shape[0]):
        valid = [j for j in range(sim.shape[1]) if ok[row, j]]
        best = sorted(valid, key=lambda j: -sim[row, j].item())[:k]
        assert set(j for j in idx[row].tolist() if j >= 0) == set(best)


def _leading_hard(idx, sim, pos):
    """Per row, the largest h such that the h hardest valid candidates were all picked."""
    b = sim.shape[0]
    s = sim.clone()
    s[torch.arange(b), pos] = float("-inf")  # the positive sorts last and is never picked
    order = torch.argsort(s, dim=1, descending=True)
    picked = torch.zeros_like(s, dtype=torch.bool)
    rows = torch.arange(b)[:, None].expand_as(idx)
    picked[rows[idx >= 0], idx[idx >= 0]] = True
    return picked.gather(1, order).long().cumprod(dim=1).sum(dim=1).double()


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.25, 0.5, 1.0])
def test_mixed_hard_share_matches_configuration(fraction):
    b, n, k = 400, 2000, 10
    g = torch.Generator().manual_seed(1)
    sim = torch.randn(b, n, generator=g)
    pos = torch.zeros(b, dtype=torch.long)
    idx = MixedNegatives(fraction).sample(sim, pos, k, generator=g)
    h = _leading_hard(idx, sim, pos)
    expected = k * fraction
    # per row the hard count is floor or ceil of k * fraction (stochastic rounding)...
    assert (h >= math.floor(expected)).all()
    # ... and on average k * fraction: binomial rounding noise plus a tiny chance that a random
    # pick lands right after the hard block (about k / n per row)
    sigma = math.sqrt((expected % 1) * (1 - expected % 1) / b)
    assert abs(h.mean().item() - expected) < 4 * sigma + 3 * k / n + 1e-9


@SETTINGS
@given(
    starts=st.lists(st.floats(0.01, 0.99), min_size=0, max_size=4, unique=True),
    fracs=st.lists(st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 1.0]), min_size=5, max_size=5),
    step=st.integers(0, 99),
)
def test_curriculum_fraction_follows_any_piecewise_schedule(starts, fracs, step):
    schedule = [(0.0, fracs[0])] + [(s, f) for s, f in zip(sorted(starts), fracs[1:])]
    cur = CurriculumNegatives(schedule)
    progress = step / 100
    expected = [f for s, f in schedule if s <= progress][-1]
    assert cur.hard_fraction(progress) == expected
    # and the sampler draws that share of hard negatives (k * fraction is an integer here)
    k, n = 10, 3000
    g = torch.Generator().manual_seed(step)
    sim = torch.randn(3, n, generator=g)
    pos = torch.zeros(3, dtype=torch.long)
    idx = cur.sample(sim, pos, k, progress=progress, generator=g)
    h = _leading_hard(idx, sim, pos)
    assert (h >= round(k * expected)).all()
    assert (h <= round(k * expected) + 2).all()  # + rare random picks adjacent to the hard block


def test_curriculum_default_is_the_chapter_schedule_and_interpolates():
    cur = CurriculumNegatives()
    assert [cur.hard_fraction(p) for p in (0.0, 0.2, 0.34, 0.5, 0.67, 1.0)] == [0.3, 0.3, 0.5, 0.5, 0.7, 0.7]
    lin = CurriculumNegatives([(0.0, 0.0), (0.5, 1.0)], interpolate=True)
    assert lin.hard_fraction(0.25) == pytest.approx(0.5) and lin.hard_fraction(0.9) == 1.0
    with pytest.raises(ValueError, match="start at progress 0"):
        CurriculumNegatives([(0.1, 0.5)])


def test_in_batch_is_uniform():
    b, n, k = 3000, 8, 3
    g = torch.Generator().manual_seed(2)
    sim = torch.randn(b, n, generator=g)
    pos = torch.zeros(b, dtype=torch.long)
    idx = InBatchNegatives().sample(sim, pos, k, generator=g)
    counts = torch.bincount(idx.flatten(), minlength=n).double()
    assert counts[0] == 0
    p = k / (n - 1)  # each valid candidate is in a row's draw with this probability
    sigma = math.sqrt(b * p * (1 - p))
    assert ((counts[1:] - b * p).abs() < 5 * sigma).all()


def test_semantic_levels_and_proportions():
    labels = torch.arange(9)
    lv = semantic_level(labels, labels, TAXONOMY)
    assert lv[0, 0] == 0 and lv[0, 1] == 3 and lv[0, 2] == 2 and lv[0, 4] == 1 and lv[4, 8] == 2
    # many candidates per level: per-level counts follow the proportions within sampling error
    b, k = 500, 10
    g = torch.Generator().manual_seed(3)
    cand = torch.arange(9).repeat(40)  # (360,) plenty of each level
    anchors = torch.randint(0, 8, (b,), generator=g)
    sim = torch.randn(b, cand.shape[0], generator=g)
    pos = torch.tensor([int((cand == a).nonzero()[0]) for a in anchors])
    props = (0.5, 0.2, 0.3)
    idx = SemanticLevelNegatives(TAXONOMY, props).sample(
        sim, pos, k, labels=anchors, candidate_labels=cand, generator=g
    )
    levels = semantic_level(anchors, cand, TAXONOMY).gather(1, idx)  # (b, k)
    assert (levels > 0).all()
    for j, p in enumerate(props):
        share = (levels == j + 1).double().mean().item()
        sigma = math.sqrt(p * (1 - p) / (b * k))
        assert abs(share - p) < 5 * sigma


def test_semantic_shortage_moves_slots_to_other_levels_and_taxonomy_file(tmp_path):
    # anchor 8 (bike) has no level-3 sibling: its level-3 slots go to levels 2 / 1
    labels = torch.tensor([8])
    cand = torch.tensor([8, 0, 1, 4, 5, 6])
    idx = SemanticLevelNegatives(TAXONOMY, (0.0, 0.0, 1.0)).sample(
        torch.randn(1, 6), torch.tensor([0]), 3, labels=labels, candidate_labels=cand
    )
    assert (idx >= 1).all()
    f = tmp_path / "tax.yaml"
    f.write_text("0: [animal, dog]\n1: {domain: animal, parent: cat}\n")
    assert load_taxonomy(f) == {0: ("animal", "dog"), 1: ("animal", "cat")}
    with pytest.raises(ValueError, match="not in the taxonomy"):
        semantic_level(torch.tensor([5]), torch.tensor([0]), load_taxonomy(f))


# --------------------------------------------------------------------- sampled_info_nce


def ref_sampled(img, txt, s, neg_idx, pos_idx):
    rows = []
    for i in range(img.shape[0]):
        p = s * (img[i] * txt[pos_idx[i]]).sum()
        terms = [p] + [s * (img[i] * txt[j]).sum() for j in neg_idx[i].tolist() if j >= 0]
        m = max(t.item() for t in terms)
        rows.append(m + torch.log(sum(torch.exp(t - m) for t in terms)) - p)
    return sum(rows) / len(rows)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_sampled_info_nce_matches_reference(dtype, tol):
    g = torch.Generator().manual_seed(4)
    img = F.normalize(torch.randn(5, 3, generator=g, dtype=torch.float64), dim=1)
    txt = F.normalize(torch.randn(7, 3, generator=g, dtype=torch.float64), dim=1)
    pos = torch.tensor([6, 0, 2, 2, 5])
    neg = torch.tensor([[1, 2, -1], [-1, -1, -1], [0, 3, 4], [1, 1, 6], [0, -1, 3]])
    a_i, a_t = img.to(dtype).clone().requires_grad_(), txt.to(dtype).clone().requires_grad_()
    out = sampled_info_nce(a_i, a_t, 6.0, neg, pos)
    out.backward()
    r_i, r_t = img.clone().requires_grad_(), txt.clone().requires_grad_()
    ref = ref_sampled(r_i, r_t, 6.0, neg, pos)
    ref.backward()
    assert abs(out.item() - ref.item()) / ref.item() < tol
    for a, r in ((a_i.grad, r_i.grad), (a_t.grad, r_t.grad)):
        assert ((a.double() - r).norm() / r.norm()).item() < tol


def test_sampled_with_all_negatives_is_info_nce():
    g = torch.Generator().manual_seed(5)
    img = F.normalize(torch.randn(4, 3, generator=g, dtype=torch.float64), dim=1)
    txt = F.normalize(torch.randn(4, 3, generator=g, dtype=torch.float64), dim=1)
    others = torch.tensor([[j for j in range(4) if j != i] for i in range(4)])
    sym = 0.5 * (sampled_info_nce(img, txt, 3.0, others) + sampled_info_nce(txt, img, 3.0, others))
    assert abs(sym.item() - info_nce(img, txt, 3.0).item()) < 1e-12


def test_registered_samplers_build_from_sections():
    for name in ("in_batch", "hard", "mixed", "curriculum"):
        entry = registry.get("negatives", name)
        sampler = entry.builder(entry.schema.model_validate({"name": name}))
        assert hasattr(sampler, "sample")
    entry = registry.get("negatives", "semantic_levels")
    sampler = entry.builder(entry.schema.model_validate({"name": "semantic_levels", "taxonomy": {0: ["a", "b"]}}))
    assert sampler.taxonomy == {0: ("a", "b")}
    with pytest.raises(Exception, match="hard_fraction"):
        registry.get("negatives", "mixed").schema.model_validate({"name": "mixed", "hard_fraction": 2})
