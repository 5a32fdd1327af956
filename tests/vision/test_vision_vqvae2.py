"""VQ-VAE-2: shapes, the bottom map's conditioning on the top, gradient flow, EMA against a plain
reference, dead-code restarts, encode/decode round trip."""

import pytest
import torch

from modalab.eval.reconstruction import evaluate_tokenizer
from modalab.vision.quantizers import VectorQuantizer
from modalab.vision.vqvae2 import VQVAE2, build_vqvae2


def _model(**kw) -> VQVAE2:
    torch.manual_seed(0)
    return build_vqvae2(top_codes=8, bottom_codes=12, channels=8, latent_dim=8, **kw)


def test_shapes_and_one_index_space():
    m = _model()
    x = torch.rand(5, 1, 16, 16)
    recon, idx, aux = m(x)
    assert recon.shape == x.shape
    assert idx.shape == (5, 4 + 16) and m.tokens_per_image(16, 16) == 20
    assert m.codebook_size == 20
    assert int(idx[:, :4].max()) < 8 and int(idx[:, 4:].min()) >= 8 and int(idx.max()) < 20
    assert aux["loss"].ndim == 0 and {"usage_top", "usage_bottom"} <= set(aux)
    m.eval()
    top, bottom = m.encode(x)
    assert top.shape == (5, 2, 2) and bottom.shape == (5, 4, 4)
    assert torch.equal(torch.cat([top.flatten(1), bottom.flatten(1) + 8], 1), m(x)[1])
    torch.testing.assert_close(m.decode(top, bottom), m(x)[0])  # decode(encode(x)) is the forward
    res = evaluate_tokenizer(m, x)
    assert res["tokens_per_image"] == 20 and 0 < res["codebook_usage"] <= 1


def test_bad_sizes_are_clear_errors():
    m = _model()
    with pytest.raises(ValueError, match="divisible by the top map's factor 8"):
        m(torch.rand(1, 1, 12, 12))
    with pytest.raises(ValueError, match="bottom_down"):
        VQVAE2(VectorQuantizer(4, 8), VectorQuantizer(4, 8), latent_dim=8, top_down=0)
    with pytest.raises(ValueError, match="top quantizer needs dim=8"):
        VQVAE2(VectorQuantizer(4, 6), VectorQuantizer(4, 8), latent_dim=8)


def test_bottom_codes_are_conditioned_on_the_top_codes():
    m = _model().eval()
    x = torch.rand(3, 1, 16, 16)
    h_b = m.enc_b(x)
    q_t = m._q(m.top, m.enc_t(h_b))[0]
    other = m.top.indices_to_codes(torch.randint(0, 8, (3, 2, 2))).permute(0, 3, 1, 2)
    a, b = m.bottom_input(h_b, q_t), m.bottom_input(h_b, other)
    assert not torch.allclose(a, b)  # same encoder features, other top codes: other bottom input
    q = q_t.detach().clone().requires_grad_(True)
    m.bottom_input(h_b.detach(), q).sum().backward()
    assert q.grad.abs().sum() > 0  # the bottom quantiser's input is a function of the top codes
    # and the image decoder reads the top map directly too
    qb = m._q(m.bottom, a)[0]
    assert not torch.allclose(m.decode_latents(q_t, qb), m.decode_latents(other, qb))


def test_gradients_reach_every_trainable_part():
    m = _model().train()
    x = torch.rand(8, 1, 16, 16)
    recon, _, aux = m(x)
    (torch.nn.functional.l1_loss(recon, x) + aux["loss"]).backward()
    for part in ("enc_b", "enc_t", "dec_t", "pre_b", "up_t", "dec"):
        grads = [p.grad for p in getattr(m, part).parameters()]
        assert grads and all(g is not None for g in grads), part
        assert sum(float(g.abs().sum()) for g in grads) > 0, part
    assert not any(p.requires_grad for p in m.top.buffers())  # EMA codebooks are buffers


def _ema_reference(embed, size, avg, x, decay, eps):
    """The EMA codebook step written out per code in float64 (VQ-VAE appendix / Razavi et al.)."""
    k = embed.shape[0]
    idx = [int(((embed - row) ** 2).sum(1).argmin()) for row in x]
    size, avg = size.clone(), avg.clone()
    for j in range(k):
        members = [row for row, i in zip(x, idx) if i == j]
        n_j = float(len(members))
        s_j = torch.stack(members).sum(0) if members else torch.zeros_like(avg[j])
        size[j] = decay * size[j] + (1 - decay) * n_j
        avg[j] = decay * avg[j] + (1 - decay) * s_j
    n = size.sum()
    smoothed = (size + eps) / (n + k * eps) * n
    return avg / smoothed[:, None], size


@pytest.mark.parametrize("level", ["top", "bottom"])
def test_ema_update_of_each_level_matches_a_plain_reference(level):
    m = _model(kmeans_init=False, dead_code_threshold=0.0).double().train()
    q = getattr(m, level)
    x = torch.rand(4, 1, 16, 16, dtype=torch.float64)
    h_b = m.enc_b(x)
    q_t = m._q(m.top, m.enc_t(h_b))[0] if level == "bottom" else None
    before = (q.embed.clone(), q.cluster_size.clone(), q.embed_avg.clone())
    z = m.enc_t(h_b) if level == "top" else m.bottom_input(h_b, q_t)
    feats = z.permute(0, 2, 3, 1).reshape(-1, 8).detach()
    expect_embed, expect_size = _ema_reference(*before, feats, q.decay, q.eps)
    m._q(q, z)
    torch.testing.assert_close(q.cluster_size, expect_size)
    torch.testing.assert_close(q.embed, expect_embed)


def test_dead_codes_restart_at_both_levels():
    m = _model(kmeans_init=False, dead_code_threshold=1.0).train()
    for q in (m.top, m.bottom):
        q.cluster_size.fill_(0.0)  # every code looks dead
    before = (m.top.embed.clone(), m.bottom.embed.clone())
    m(torch.rand(4, 1, 16, 16))
    for q, old in zip((m.top, m.bottom), before):
        assert not torch.equal(q.embed, old)
        assert float(q.cluster_size.min()) >= 1.0 - 1e-6  # restarted codes get the threshold usage
