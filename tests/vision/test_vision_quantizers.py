"""Quantizers: straight-through gradients, EMA updates, dead-code restarts, k-means, FSQ codes."""

import math

import pytest
import torch

from modalab.vision.quantizers import FSQ, ContinuousQuantizer, VectorQuantizer, code_stats


CODES = [[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0]]
X = [[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]  # -> codes 0, 0, 1; code 2 unused


def hand_vq(**kw) -> VectorQuantizer:
    """K=3, dim=2 quantizer with the codebook CODES and unit initial cluster sizes."""
    kw = {"kmeans_init": False, "decay": 0.5, "eps": 0.0, **kw}
    vq = VectorQuantizer(3, 2, **kw).double()
    with torch.no_grad():
        vq.embed.copy_(torch.tensor(CODES, dtype=torch.float64))
        vq.embed_avg.copy_(vq.embed)
    return vq


def test_nearest_code_matches_brute_force():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, kmeans_init=False).double().eval()
    z = torch.randn(2, 5, 4, dtype=torch.float64)
    q, idx, _ = vq(z)
    d = ((z[..., None, :] - vq.embed) ** 2).sum(-1)  # (2, 5, 16)
    assert torch.equal(idx, d.argmin(-1))
    assert torch.equal(q, vq.embed[idx])
    assert torch.equal(vq.indices_to_codes(idx), q)


def test_straight_through_gradient_is_identity_and_losses():
    vq = hand_vq(use_ema=False, beta=0.25).eval()
    z = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    q, idx, aux = vq(z)
    assert idx.tolist() == [0, 0, 1]
    w = torch.randn(3, 2, dtype=torch.float64)
    (q * w).sum().backward()
    assert torch.equal(z.grad, w)  # the gradient passes straight through to the encoder
    target = torch.tensor([CODES[0], CODES[0], CODES[1]], dtype=torch.float64)
    mse = ((z.detach() - target) ** 2).mean()
    assert torch.allclose(aux["commitment"], mse) and torch.allclose(aux["codebook"], mse)
    assert torch.allclose(aux["loss"], 1.25 * mse)


def test_codebook_loss_trains_codes_and_commitment_trains_encoder():
    vq = hand_vq(use_ema=False, beta=0.25).eval()
    z = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    _, _, aux = vq(z)
    aux["loss"].backward()
    target = torch.tensor([CODES[0], CODES[0], CODES[1]], dtype=torch.float64)
    n = z.numel()
    assert torch.allclose(z.grad, 0.25 * 2 * (z.detach() - target) / n)
    expected = torch.zeros(3, 2, dtype=torch.float64)
    expected.index_add_(0, torch.tensor([0, 0, 1]), 2 * (target - z.detach()) / n)
    assert torch.allclose(vq.embed.grad, expected)  # unused code 2 gets no gradient


def test_ema_update_changes_used_codes_by_hand_formula():
    vq = hand_vq(use_ema=True).train()
    vq(torch.tensor(X, dtype=torch.float64))
    # cluster_size = 0.5 * 1 + 0.5 * [2, 1, 0]; embed_avg = 0.5 * codes + 0.5 * cluster sums
    assert torch.allclose(vq.cluster_size, torch.tensor([1.5, 1.0, 0.5], dtype=torch.float64))
    expected = torch.tensor([[0.5 / 1.5, 0.5 / 1.5], [9.5, 9.5], [-10.0, 10.0]],
                            dtype=torch.float64)
    assert torch.allclose(vq.embed, expected)  # code 2 is unchanged


def test_ema_laplace_smoothing():
    vq = hand_vq(use_ema=True, eps=0.1).train()
    vq(torch.tensor(X, dtype=torch.float64))
    cs = torch.tensor([1.5, 1.0, 0.5], dtype=torch.float64)
    smoothed = (cs + 0.1) / (cs.sum() + 3 * 0.1) * cs.sum()
    avg = torch.tensor([[0.5, 0.5], [9.5, 9.5], [-5.0, 5.0]], dtype=torch.float64)
    assert torch.allclose(vq.embed, avg / smoothed[:, None])


def test_eval_mode_changes_nothing():
    vq = hand_vq(use_ema=True, dead_code_threshold=10.0).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.tensor(X, dtype=torch.float64))
    for k, v in vq.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("use_ema", [False, True])
def test_dead_code_restart_replaces_exactly_the_dead_code(use_ema):
    torch.manual_seed(0)
    vq = hand_vq(use_ema=use_ema, dead_code_threshold=0.75).train()
    x = torch.tensor(X, dtype=torch.float64)
    vq(x)
    # usage after the step: [1.5, 1.0, 0.5]; only code 2 is below 0.75
    live = torch.tensor([[0.5 / 1.5, 0.5 / 1.5], [9.5, 9.5]], dtype=torch.float64)
    if not use_ema:
        live = torch.tensor(CODES[:2], dtype=torch.float64)
    assert torch.allclose(vq.embed[:2], live)
    assert any(torch.equal(vq.embed[2], row) for row in x), vq.embed[2]
    assert torch.allclose(vq.cluster_size, torch.tensor([1.5, 1.0, 0.75], dtype=torch.float64))
    if use_ema:  # EMA statistics of the new code agree with its value
        assert torch.allclose(vq.embed_avg[2], vq.embed[2] * 0.75)


def test_no_restart_above_threshold():
    vq = hand_vq(use_ema=False, dead_code_threshold=0.4).train()
    vq(torch.tensor(X, dtype=torch.float64))
    assert torch.equal(vq.embed.detach(), torch.tensor(CODES, dtype=torch.float64))


def test_kmeans_init_finds_cluster_means():
    torch.manual_seed(0)
    a = torch.randn(50, 2, dtype=torch.float64) * 0.1 + torch.tensor([5.0, 0.0])
    b = torch.randn(30, 2, dtype=torch.float64) * 0.1 + torch.tensor([-5.0, 0.0])
    vq = VectorQuantizer(2, 2, kmeans_init=True, decay=0.99).double().train()
    assert not bool(vq.initted)
    x = torch.cat([a, b])
    vq._kmeans_init(x)
    order = vq.embed[:, 0].argsort(descending=True)
    assert torch.allclose(vq.embed[order], torch.stack([a.mean(0), b.mean(0)]))
    assert vq.cluster_size[order].tolist() == [50.0, 30.0]
    assert bool(vq.initted)
    vq(x)  # the first forward does not re-initialise
    assert torch.allclose(vq.embed[order], torch.stack([a.mean(0), b.mean(0)]), atol=1e-6)


def test_l2_normalised_low_dim_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 6, code_dim=3, l2_normalize=True, use_ema=False).train()
    z = torch.randn(4, 5, 6, requires_grad=True)
    q, idx, aux = vq(z)
    assert q.shape == (4, 5, 6) and idx.shape == (4, 5)
    assert torch.allclose(vq.embed.norm(dim=-1), torch.ones(8), atol=1e-5)  # k-means is spherical
    (q.sum() + aux["loss"]).backward()
    assert z.grad.abs().sum() > 0 and vq.project_in.weight.grad.abs().sum() > 0
    assert torch.allclose(vq.indices_to_codes(idx), q, atol=1e-6)


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [7, 5, 5, 5, 5], [2, 3, 4]])
def test_fsq_index_code_round_trip_is_exact(levels):
    fsq = FSQ(levels)
    assert fsq.codebook_size == math.prod(levels)
    idx = torch.arange(fsq.codebook_size)
    grid = fsq.indices_to_grid(idx)
    assert torch.equal(fsq.codes_to_indices(grid), idx)
    assert len({tuple(r) for r in grid.tolist()}) == fsq.codebook_size  # all codes distinct
    torch.manual_seed(0)
    codes = fsq.quantize(torch.randn(1000, len(levels)) * 3)
    assert torch.equal(fsq.indices_to_grid(fsq.codes_to_indices(codes)), codes)


def test_fsq_each_channel_takes_exactly_its_levels():
    fsq = FSQ([8, 5])
    z = torch.linspace(-20, 20, 4001)[:, None].expand(-1, 2)
    codes = fsq.quantize(z)
    assert torch.unique(codes[:, 0]).numel() == 8 and torch.unique(codes[:, 1]).numel() == 5
    assert codes.min() >= -1 and codes.max() <= 1


def test_fsq_straight_through_gradient():
    torch.manual_seed(0)
    fsq = FSQ([8, 5, 5, 5], dim=4).double()
    z = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    q, idx, aux = fsq(z)
    q.sum().backward()
    z2 = z.detach().clone().requires_grad_(True)
    (fsq.bound(z2) / fsq._half_width).sum().backward()  # rounding contributes identity
    assert torch.allclose(z.grad, z2.grad)
    assert torch.equal(fsq.indices_to_codes(idx), q.detach())
    assert float(aux["loss"]) == 0.0


def test_fsq_projection_and_bad_levels():
    fsq = FSQ([8, 5, 5, 5], dim=16)
    q, idx, _ = fsq(torch.randn(2, 3, 3, 16))
    assert q.shape == (2, 3, 3, 16) and idx.shape == (2, 3, 3) and int(idx.max()) < 1000
    with pytest.raises(ValueError, match="levels"):
        FSQ([8, 1])


def test_continuous_is_identity():
    cq = ContinuousQuantizer(4)
    z = torch.randn(2, 3, 4, requires_grad=True)
    q, idx, aux = cq(z)
    assert q is z and idx is None and float(aux["loss"]) == 0.0


def test_code_stats_hand_values():
    usage, ppl = code_stats(torch.tensor([0, 0, 0, 1]), 4)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert float(usage) == 0.5 and math.isclose(float(ppl), math.exp(h), rel_tol=1e-6)


def test_bf16_autocast_keeps_full_precision_lookup():
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 8, kmeans_init=False).eval()
    z = torch.randn(4, 16, 8)
    _, idx32, _ = vq(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, idx16, _ = vq(z)
    assert torch.equal(idx16, idx32) and q.dtype == torch.float32
    fsq = FSQ([8, 5, 5, 5])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, idx, _ = fsq(z[..., :4].bfloat16())
    assert torch.equal(idx, fsq(z[..., :4].bfloat16().float())[1])
