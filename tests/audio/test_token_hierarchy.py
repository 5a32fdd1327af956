"""k-means semantic tokeniser and the two-stage (semantic -> acoustic) token LM."""

from __future__ import annotations

import pytest
import torch

from modalab.audio.kmeans_tokens import KMeansTokenizer, kmeans_pp_init, lloyd
from modalab.models.token_hierarchy import build_two_stage


def _blobs(k: int = 4, per: int = 50, dim: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 10
    labels = torch.arange(k).repeat_interleave(per)
    return centres[labels] + 0.1 * torch.randn(k * per, dim, generator=g), labels


def test_kmeans_recovers_separated_clusters():
    x, labels = _blobs()
    tok = KMeansTokenizer.fit(x, k=4, seed=0)
    ids = tok.encode(x)
    assert ids.shape == labels.shape and ids.dtype == torch.long
    # one token per blob, different blobs different tokens (a permutation of the true labels)
    pairs = {(int(a), int(b)) for a, b in zip(labels, ids)}
    assert len(pairs) == 4 and len({b for _, b in pairs}) == 4


def test_kmeans_encode_matches_brute_force_on_batches():
    x, _ = _blobs(k=5, dim=6, seed=1)
    tok = KMeansTokenizer.fit(x, k=5, seed=3)
    feats = torch.randn(2, 7, 6) * 10  # (B, T, D)
    ids = tok.encode(feats)
    assert ids.shape == (2, 7)
    z = (feats - tok.mean) / tok.std
    ref = torch.tensor([[min(range(5), key=lambda c: float((z[b, t] - tok.centroids[c]).pow(2).sum()))
                         for t in range(7)] for b in range(2)])
    assert torch.equal(ids, ref)


def test_lloyd_never_increases_inertia_over_seeding():
    x, _ = _blobs(k=3, per=30, seed=2)
    c0 = kmeans_pp_init(x, 3, torch.Generator().manual_seed(0))
    inertia0 = float(torch.cdist(x, c0).min(1).values.pow(2).mean())
    _, inertia = lloyd(x, c0, iters=20)
    assert inertia <= inertia0 + 1e-6


def test_kmeans_errors_name_the_problem():
    with pytest.raises(ValueError, match="expected 1 <= k <= N"):
        KMeansTokenizer.fit(torch.randn(3, 2), k=5)
    tok = KMeansTokenizer.fit(torch.randn(20, 2), k=2)
    with pytest.raises(ValueError, match="feature dim 3"):
        tok.encode(torch.randn(4, 3))


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_two_stage(n_classes=3, n_semantic=5, n_acoustic=4, n_q=2, sem_len=3, frames=4, dim=16, depth=1,
                           heads=2).eval()


def _batch(b: int = 2):
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 3, (b,), generator=g), torch.randint(0, 5, (b, 3), generator=g),
            torch.randint(0, 4, (b, 4, 2), generator=g))


def test_acoustic_layout_interleaves_levels_with_own_ids():
    m = _model()
    labels, sem, ac = _batch()
    ids = m.acoustic_ids(labels, sem, ac)
    assert ids.shape == (2, 1 + 3 + 1 + 4 * 2)
    assert torch.equal(ids[:, 0], labels) and torch.equal(ids[:, 1:4], sem + 3) and bool((ids[:, 4] == 8).all())
    # frame t, level l -> position 5 + 2 t + l, id 9 + 4 l + code
    for t in range(4):
        for lvl in range(2):
            assert torch.equal(ids[:, 5 + 2 * t + lvl], 9 + 4 * lvl + ac[:, t, lvl])
    assert m.vocab == 3 + 5 + 1 + 2 * 4


def test_stage_losses_are_finite_scalars_and_train():
    m = _model().train()
    labels, sem, ac = _batch(4)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        ls, la = m.stage_losses(labels, sem, ac)
        assert ls.dim() == 0 and la.dim() == 0
        first = first if first is not None else float((ls + la).detach())
        opt.zero_grad()
        (ls + la).backward()
        opt.step()
    assert float((ls + la).detach()) < 0.5 * first  # memorises four sequences


@pytest.mark.parametrize("stage", ["semantic", "acoustic"])
def test_stages_are_causal(stage):
    m = _model()
    labels, sem, ac = _batch()
    ids = m.acoustic_ids(labels, sem, ac)
    lm = getattr(m, stage)
    ids = ids[:, : lm.max_len]
    j = ids.shape[1] - 3
    changed = ids.clone()
    changed[:, j] = (changed[:, j] + 1) % m.vocab
    a, b = lm(ids), lm(changed)
    assert torch.allclose(a[:, :j], b[:, :j], atol=1e-6)  # nothing before j sees token j
    assert not torch.allclose(a[:, j], b[:, j])


def test_generate_shapes_ranges_and_semantic_conditioning():
    m = _model()
    labels = torch.tensor([0, 1, 2])
    sem, ac = m.generate(labels, temperature=1.0, gen=torch.Generator().manual_seed(0))
    assert sem.shape == (3, 3) and ac.shape == (3, 4, 2)
    assert int(sem.min()) >= 0 and int(sem.max()) < 5 and int(ac.min()) >= 0 and int(ac.max()) < 4
    # greedy generation is a function of the label: the same label twice gives the same tokens
    s1, a1 = m.generate(torch.tensor([1, 1]), temperature=0)
    assert torch.equal(s1[0], s1[1]) and torch.equal(a1[0], a1[1])


def test_shape_errors_name_the_expected_shape():
    m = _model()
    labels, sem, ac = _batch()
    with pytest.raises(ValueError, match=r"expected \(B, 4, 2\)"):
        m.stage_losses(labels, sem, ac[:, :3])
    with pytest.raises(ValueError, match="labels outside"):
        m.stage_losses(labels + 5, sem, ac)
