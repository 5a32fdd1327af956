import math

import pytest
import torch

from modalab.audio.adapter import build_adapter, segments_to_token_langs
from modalab.audio.encoders import EventCNN, pool_clip
from modalab.audio.tf_attention import TimeFreqAttention
from modalab.audio.whisper_encoder import WhisperStyleEncoder, block, sinusoids


@pytest.mark.parametrize("pooling", ["max", "mean", "attention"])
def test_audio_event_cnn_shapes(pooling):
    torch.manual_seed(0)
    m = EventCNN(n_classes=7, n_mels=64, pooling=pooling).eval()
    out = m(torch.randn(2, 64, 100))
    assert out["frame_logits"].shape == (2, 25, 7) and out["clip_prob"].shape == (2, 7)
    assert torch.all((out["clip_prob"] >= 0) & (out["clip_prob"] <= 1))


def test_audio_clip_pooling_definitions():
    torch.manual_seed(0)
    fl, al = torch.randn(3, 10, 4, dtype=torch.float64), torch.randn(3, 10, 4, dtype=torch.float64)
    torch.testing.assert_close(pool_clip(fl, "max"), torch.sigmoid(fl.max(1).values))
    torch.testing.assert_close(pool_clip(fl, "mean"), torch.sigmoid(fl.mean(1)))
    ref = (al.exp() / al.exp().sum(1, keepdim=True) * torch.sigmoid(fl)).sum(1)
    torch.testing.assert_close(pool_clip(fl, "attention", al), ref)


def test_audio_tf_attention_is_per_sample():
    torch.manual_seed(0)
    m = TimeFreqAttention(dim=32, heads=4).eval()
    x = torch.randn(2, 6, 5, 32)
    y = m(x)
    x2 = x.clone()
    x2[1] = torch.randn(6, 5, 32)
    assert y.shape == x.shape
    torch.testing.assert_close(m(x2)[0], y[0])  # the chapter's sketch mixed samples (batch_first bug)


def test_audio_whisper_encoder_rate_and_attention_reference():
    torch.manual_seed(0)
    enc = WhisperStyleEncoder(n_mels=80, dim=32, depth=2, heads=4)
    out, hidden = enc(torch.randn(2, 80, 100), return_hidden=True)  # 1 s at 100 frames/s
    assert out.shape == (2, 50, 32) and len(hidden) == 2  # 50 tokens/s
    blk = block(16, 2).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    h = blk.norm1(x)
    q, k, v = blk.attn.qkv(h).view(2, 5, 3, 2, 8).unbind(2)
    att = torch.softmax(torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(8), -1)
    a = torch.einsum("bhij,bjhd->bihd", att, v).reshape(2, 5, 16)
    ref = x + blk.attn.proj(a)
    ref = ref + blk.mlp(blk.norm2(ref))
    got = blk(x)
    torch.testing.assert_close(got, ref)
    g1, = torch.autograd.grad(got.sum(), x)
    g2, = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g1, g2)
    s = sinusoids(10, 8)
    assert s.shape == (10, 8) and torch.allclose(s[0], torch.tensor([0.0] * 4 + [1.0] * 4))


@pytest.mark.parametrize("kind", ["stride", "avg_pool", "conv", "window_query"])
def test_audio_adapter_tokens_per_second(kind):
    torch.manual_seed(0)
    ad = build_adapter(enc_dim=32, lm_dim=48, kind=kind, k=4, in_rate=50.0)
    assert ad.tokens_per_second == 12.5
    out = ad(torch.randn(2, 50 * 3, 32))  # 3 s at 50 Hz
    assert out.shape == (2, int(12.5 * 3) + 1, 48)  # ceil(150 / 4) = 38
    out2 = ad(torch.randn(2, 148, 32))
    assert out2.shape == (2, 37, 48)


def test_audio_adapter_definitions():
    x = torch.randn(1, 8, 4)
    ad = build_adapter(4, 4, "stride", 4)
    torch.testing.assert_close(ad.down(x), x[:, ::4])
    ad = build_adapter(4, 4, "avg_pool", 4)
    torch.testing.assert_close(ad.down(x), x.view(1, 2, 4, 4).mean(2))
    wq = build_adapter(4, 4, "window_query", 4).down
    y = x.clone()
    y[:, 4:] = torch.randn(1, 4, 4)  # change only the second window
    torch.testing.assert_close(wq(y)[:, 0], wq(x)[:, 0])


def test_audio_adapter_language_and_code_switching():
    torch.manual_seed(0)
    ad = build_adapter(16, 24, "avg_pool", 4, n_langs=3)
    feats = torch.randn(1, 100, 16)  # 2 s at 50 Hz -> 25 tokens
    ids = segments_to_token_langs([[(0.0, 0.8, 1), (0.8, 2.0, 2)]], 25, ad.tokens_per_second)
    assert ids[0, :10].eq(1).all() and ids[0, 10:].eq(2).all()
    base = ad.proj(ad.down(feats))
    out = ad(feats, ids)
    torch.testing.assert_close(out - base, ad.lang(ids))
    torch.testing.assert_close(ad(feats, torch.tensor([2])) - base, ad.lang.weight[2].expand(1, 25, 24))
    with pytest.raises(ValueError, match="cover 3 tokens"):
        ad(feats, torch.zeros(1, 3, dtype=torch.long))
