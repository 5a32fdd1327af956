import math

import pytest
import torch

from modalab.audio.codec import build_codec
from modalab.audio.codec_metrics import multires_stft_loss, si_snr
from modalab.audio.rvq import EMACodebook, ResidualVQ, nearest_code


def test_codec_encode_decode_shapes_and_gradients():
    torch.manual_seed(0)
    codec = build_codec(channels=4, strides=(4, 5, 4), dim=16, n_levels=8, codebook_size=16)
    wav = torch.randn(2, 1000) * 0.1
    codec.train()
    y, codes, aux = codec(wav, n_q=3)
    assert y.shape == (2, 1000) and codes.shape == (2, math.ceil(1000 / 80), 3)
    (y.pow(2).mean() + aux["loss"]).backward()
    assert codec.encoder.net[0].weight.grad is not None and codec.encoder.net[0].weight.grad.abs().sum() > 0
    codec.eval()
    with torch.no_grad():
        c = codec.encode(wav)
        assert c.shape == (2, 13, 8) and c.dtype == torch.long and int(c.max()) < 16
        out = codec.decode(c, length=1000)
        assert out.shape == (2, 1000)
        torch.testing.assert_close(out, codec(wav)[0])  # decode(encode(x)) is the forward pass
    assert codec.frame_rate == 200 and codec.bits_per_second(4) == 4 * 4 * 200


def test_codec_rejects_bad_input():
    codec = build_codec(channels=4, dim=8, n_levels=2, codebook_size=4)
    with pytest.raises(ValueError, match="samples"):
        codec(torch.randn(2, 1, 100))
    with pytest.raises(ValueError, match="n_q"):
        codec(torch.randn(1, 160), n_q=3)


def test_rvq_each_level_reduces_residual_on_fitted_codebooks():
    torch.manual_seed(0)
    x = torch.randn(4, 256, 8, dtype=torch.float64).float()
    rvq = ResidualVQ(4, 16, 8, quantizer_dropout=False, decay=0.0)
    rvq.train()
    rvq(x)  # k-means fit of each level on its residual
    rvq.eval()
    q, codes, aux = rvq(x)
    norms = [float(x.pow(2).mean())] + aux["residual_norms"]
    assert all(b < a for a, b in zip(norms, norms[1:])), norms
    assert codes.shape == (4, 256, 4)
    # the quantised vector is the sum of each level's code, and decode reproduces it
    torch.testing.assert_close(rvq.decode(codes), q)
    ref = sum(rvq.levels[i].embed[codes[..., i]] for i in range(4))
    torch.testing.assert_close(q, ref)
    assert abs(aux["residual_norms"][-1] - float((x - q).pow(2).mean())) < 1e-5


def test_rvq_quantizer_dropout_and_eval_uses_all_levels():
    torch.manual_seed(0)
    rvq = ResidualVQ(4, 8, 4, quantizer_dropout=True)
    rvq.train()
    seen = set()
    for _ in range(40):
        _, codes, aux = rvq(torch.randn(2, 10, 4))
        assert codes.shape[-1] == aux["n_q"]
        seen.add(aux["n_q"])
    assert seen == {1, 2, 3, 4}
    rvq.eval()
    assert rvq(torch.randn(2, 10, 4))[1].shape[-1] == 4
    assert ResidualVQ(4, 8, 4, quantizer_dropout=False).train()(torch.randn(2, 10, 4))[2]["n_q"] == 4


def test_rvq_codebook_usage_and_dead_code_restart():
    torch.manual_seed(0)
    centres = torch.randn(8, 4) * 5
    x = centres[torch.arange(400) % 8] + 0.01 * torch.randn(400, 4)
    book = EMACodebook(8, 4, decay=0.9, dead_code_threshold=0.0)
    book.train()
    _, idx = book(x)
    assert torch.unique(idx).numel() == 8  # k-means init finds all 8 clusters
    # a dead code (never used) is moved onto the data by the restart
    book2 = EMACodebook(4, 4, decay=0.5, dead_code_threshold=1.0)
    book2.fit_kmeans(x[:200])
    book2.embed[0] = 1e3
    book2.embed_avg[0] = 1e3 * book2.cluster_size[0]
    book2.train()
    for _ in range(12):  # its EMA usage halves each step until below the threshold
        book2(x)
    assert book2.embed[0].abs().max() < 100
    assert int(torch.unique(nearest_code(x, book2.embed)).numel()) >= 3


def test_si_snr_hand_computed_and_scale_invariant():
    ref = torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    est = torch.tensor([[3.0, -1.0, 1.0, -3.0]], dtype=torch.float64)  # 2 * ref + [1, 1, -1, -1]
    # s_t = (8 / 4) ref, noise = [1, 1, -1, -1]: 10 log10(16 / 4)
    assert abs(float(si_snr(est, ref)) - 10 * math.log10(4.0)) < 1e-6
    assert abs(float(si_snr(3 * est, ref)) - 10 * math.log10(4.0)) < 1e-6
    assert abs(float(si_snr(est + 5.0, ref)) - 10 * math.log10(4.0)) < 1e-6  # zero-mean first


def test_multires_stft_loss_values():
    torch.manual_seed(0)
    ref = torch.randn(2, 4096, dtype=torch.float64)
    assert float(multires_stft_loss(ref, ref)) < 1e-9
    # est = ref / 2: spectral convergence 0.5, log-magnitude L1 log 2 at every resolution
    got = float(multires_stft_loss(ref / 2, ref, eps=1e-12))
    assert abs(got - (0.5 + math.log(2.0))) < 1e-6
    with pytest.raises(ValueError, match="differ"):
        multires_stft_loss(ref, ref[:, :100])
