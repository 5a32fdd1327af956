"""Modality experts: routing by modality id, joint expert, learned top-k router and its loss."""

import torch

from modalab.fusion.mome import (
    MoMEBlock,
    RoutedFFN,
    load_balancing_loss,
    mome_encoder,
    routed_encoder,
)


def _batch(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    ids = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]])
    return x, ids


def test_each_modality_only_reaches_its_expert():
    x, ids = _batch()
    blk = MoMEBlock(16, 2, num_modalities=2).double()
    out, aux = blk(x, ids)
    assert float(aux) == 0.0
    with torch.no_grad():  # perturb expert 1: row 1 (all modality 0) must not move
        for p in blk.experts[1].parameters():
            p.add_(torch.randn_like(p))
    out2, _ = blk(x, ids)
    torch.testing.assert_close(out2[1], out[1], rtol=0, atol=0)
    assert not torch.allclose(out2[0, 3:], out[0, 3:])
    # reference: each expert on all tokens densely, then select per token
    h = blk.norm2(x + blk.attn(blk.norm1(x)))
    dense = torch.stack([e(h) for e in blk.experts], 0)  # (E, B, N, D)
    ref = x + blk.attn(blk.norm1(x)) + torch.where(ids[..., None] == 0, dense[0], dense[1])
    torch.testing.assert_close(out2, ref, rtol=1e-10, atol=1e-12)


def test_joint_expert_for_multimodal_samples_only():
    x, ids = _batch(1)
    blk = MoMEBlock(16, 2, num_modalities=2, joint_expert=True).double()
    assert blk.expert_ids(ids, None).tolist() == [[2] * 6, [0] * 6]
    # padding does not make a sample multimodal
    mask = torch.tensor([[True] * 3 + [False] * 3, [True] * 6])
    assert blk.expert_ids(ids, mask)[0].tolist() == [0, 0, 0, 1, 1, 1]  # own experts, no joint
    out, _ = blk(x, ids)
    with torch.no_grad():
        for p in list(blk.experts[0].parameters()) + list(blk.experts[1].parameters()):
            p.add_(1.0)
    torch.testing.assert_close(blk(x, ids)[0][0], out[0], rtol=0, atol=0)


def test_mome_encoder_layout_and_padding():
    x, ids = _batch(2)
    enc = mome_encoder(16, depth=3, heads=2, num_modalities=2, joint_layers=1).double()
    assert [b.joint is not None for b in enc.blocks] == [False, False, True]
    mask = torch.tensor([[True] * 5 + [False], [True] * 6])
    out, _ = enc(x, ids, mask)
    noisy = x.clone()
    noisy[0, 5] = 1e3
    torch.testing.assert_close(enc(noisy, ids, mask)[0][:, :5], out[:, :5], rtol=0, atol=0)


def test_load_balancing_loss_reference():
    e = 4
    uniform = torch.full((8, e), 1 / e)
    chosen = torch.arange(8).remainder(e)[:, None]
    torch.testing.assert_close(load_balancing_loss(uniform, chosen, e), torch.tensor(1.0))
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(10, e, dtype=torch.float64), -1)
    chosen = probs.topk(2, -1).indices
    f = torch.stack([(chosen == i).double().sum() / chosen.numel() for i in range(e)])
    torch.testing.assert_close(load_balancing_loss(probs, chosen, e), e * (f * probs.mean(0)).sum())
    collapsed = torch.zeros(10, e, dtype=torch.float64)
    collapsed[:, 0] = 1
    assert float(load_balancing_loss(collapsed, torch.zeros(10, 1, dtype=torch.long), e)) == e


def test_routed_ffn_reference_and_padding_excluded_from_loss():
    torch.manual_seed(3)
    moe = RoutedFFN(8, num_experts=3, k=2).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    out, aux = moe(x, mask)
    probs = torch.softmax(moe.router(x), -1)
    top_p, top_i = probs.topk(2, -1)
    w = top_p / top_p.sum(-1, keepdim=True)
    dense = torch.stack([e(x) for e in moe.experts], -2)  # (B, N, E, D)
    ref = sum(w[..., j, None] * dense.gather(-2, top_i[..., j, None, None].expand(-1, -1, 1, 8)).squeeze(-2)
              for j in range(2))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(aux, load_balancing_loss(probs[mask], top_i[mask], 3), rtol=1e-10, atol=1e-12)
    x2 = x.clone()
    x2[0, 3:] = 50.0
    torch.testing.assert_close(moe(x2, mask)[1], aux, rtol=0, atol=0)
    aux.backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0


def test_routed_encoder_runs_and_sums_aux():
    x, ids = _batch(4)
    enc = routed_encoder(16, depth=2, heads=2, num_experts=4, k=1).double()
    out, aux = enc(x, ids)
    assert out.shape == x.shape and 2.0 <= aux.detach().item() <= 8.0  # two layers, each in [1, E]
