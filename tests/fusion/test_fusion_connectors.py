"""Connectors: linear / mlp, Perceiver resampler and Q-Former (fixed output size, media masks)."""

import pytest
import torch

from modalab import registry
from modalab.fusion.connectors import linear, mlp
from modalab.fusion.qformer import QFormer
from modalab.fusion.resampler import PerceiverResampler


def test_linear_and_mlp_keep_tokens_and_mask():
    torch.manual_seed(0)
    x, m = torch.randn(2, 5, 12), torch.ones(2, 5, dtype=torch.bool)
    for conn in (linear(12, 20), mlp(12, 20)):
        y, mask = conn(x, m)
        assert y.shape == (2, 5, 20) and mask is m
    seq = mlp(12, 20).proj
    assert [type(l).__name__ for l in seq] == ["Linear", "GELU", "Linear"]


@pytest.mark.parametrize("cls", [PerceiverResampler, QFormer])
def test_output_size_independent_of_input_length(cls):
    torch.manual_seed(0)
    kw = dict(depth=2, heads=2) | ({"head_dim": 8, "num_latents": 6} if cls is PerceiverResampler
                                   else {"num_queries": 6})
    conn = cls(in_dim=12, dim=16, out_dim=24, **kw)
    for n in (1, 7, 50):
        y, mask = conn(torch.randn(3, n, 12))
        assert y.shape == (3, 6, 24) and mask is None


@pytest.mark.parametrize("cls", [PerceiverResampler, QFormer])
def test_masked_media_never_affect_outputs(cls):
    torch.manual_seed(1)
    kw = {"head_dim": 8, "num_latents": 4} if cls is PerceiverResampler else {"num_queries": 4}
    conn = cls(in_dim=12, dim=16, depth=2, heads=2, **kw).double()
    media = torch.randn(2, 9, 12, dtype=torch.float64)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 5:] = False
    y, _ = conn(media, mask)
    noisy = media.clone()
    noisy[0, 5:] = 100 * torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(conn(noisy, mask)[0], y, rtol=0, atol=0)
    # the padded row equals the same media without padding
    torch.testing.assert_close(conn(media[:1, :5])[0], y[:1], rtol=1e-10, atol=1e-12)
    # and the mask matters: the other row still depends on every token
    noisy[1, 0] += 1.0
    assert not torch.allclose(conn(noisy, mask)[0][1], y[1])


def test_resampler_keys_include_latents_and_frames_get_time_embeddings():
    torch.manual_seed(2)
    r = PerceiverResampler(in_dim=8, dim=8, depth=1, heads=2, head_dim=4, num_latents=3, max_frames=4).double()
    frames = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    y, _ = r(frames)
    assert y.shape == (2, 3, 8)
    # frame order matters because of the time embeddings
    assert not torch.allclose(r(frames.flip(1))[0], y)
    # without time embeddings a frame input is an error that says what to do
    with pytest.raises(ValueError, match="max_frames"):
        PerceiverResampler(in_dim=8, dim=8, depth=1, heads=2, head_dim=4, num_latents=3)(frames)
    # frame mask (B, F, N) behaves like a flat mask
    fm = torch.ones(2, 3, 5, dtype=torch.bool)
    fm[:, 2] = False
    noisy = frames.clone()
    noisy[:, 2] = 50.0
    torch.testing.assert_close(r(noisy, fm)[0], r(frames, fm)[0], rtol=0, atol=0)


def test_qformer_cross_attention_every_other_layer():
    q = QFormer(in_dim=8, dim=8, depth=5, heads=2, num_queries=2, cross_every=2)
    assert [l.cross_attn is not None for l in q.layers] == [True, False, True, False, True]


def test_registered_connector_builders():
    for name in ("linear", "mlp", "perceiver_resampler", "qformer"):
        conn = registry.build("connector", name, in_dim=12, out_dim=16)
        y, _ = conn(torch.randn(2, 5, 12))
        assert y.shape[0] == 2 and y.shape[-1] == 16
