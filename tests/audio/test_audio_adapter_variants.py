import pytest
import torch

from modalab.audio.adapter import build_adapter, make_downsampler


@pytest.mark.parametrize("kind", ["stride", "avg_pool", "conv", "window_query"])
def test_adapter_50hz_to_10hz_shapes(kind):
    torch.manual_seed(0)
    ad = build_adapter(enc_dim=12, lm_dim=20, kind=kind, k=5, in_rate=50.0)
    for t in (50, 53):  # 1 s at 50 Hz, and a length that is not a multiple of k
        out = ad(torch.randn(2, t, 12))
        assert out.shape == (2, -(-t // 5), 20)
    assert ad.tokens_per_second == 10.0


def test_pooled_downsampler_equals_reference_average():
    x = torch.randn(2, 12, 3, dtype=torch.float64)
    got = make_downsampler("avg_pool", 5, 3)(x)
    ref = torch.stack([x[:, 0:5].mean(1), x[:, 5:10].mean(1), x[:, 10:12].mean(1)], 1)  # last window: 2 frames
    torch.testing.assert_close(got, ref)


def test_strided_keeps_every_kth_and_learned_conv_is_a_window_linear_map():
    x = torch.randn(1, 10, 4, dtype=torch.float64)
    torch.testing.assert_close(make_downsampler("stride", 5, 4)(x), x[:, [0, 5]])
    conv = make_downsampler("conv", 5, 4).double()
    w, b = conv.conv.weight, conv.conv.bias  # (D_out, D_in, k)
    ref = torch.stack([torch.einsum("oik,ki->o", w, x[0, 5 * j: 5 * j + 5]) + b for j in range(2)])[None]
    torch.testing.assert_close(conv(x), ref)
    g = torch.autograd.grad(conv(x).sum(), w)[0]
    assert g.abs().sum() > 0  # the learned variant trains
