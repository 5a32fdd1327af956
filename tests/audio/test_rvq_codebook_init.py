"""Issue 18: k-means start of all RVQ levels, residual by residual, when quantisation starts."""

import pytest
import torch

from modalab.audio.codec import build_codec
from modalab.audio.codec_train import train_codec
from modalab.audio.rvq import ResidualVQ, nearest_code


def _frames(n: int = 2048, dim: int = 8, scale: float = 20.0) -> torch.Tensor:
    """Frames far from the N(0, 1) scale of the untouched codebooks (as trained encoder frames are)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(12, dim, generator=g) * scale
    return centres[torch.randint(0, 12, (n,), generator=g)] + torch.randn(n, dim, generator=g) * scale / 4


def test_init_codebooks_every_level_beats_its_residual_and_levels_are_monotone():
    torch.manual_seed(0)
    z = _frames()
    rvq = ResidualVQ(n_levels=4, num_codes=16, dim=8, quantizer_dropout=True)
    norms = rvq.init_codebooks(z)
    assert len(norms) == 5 and all(bool(lv.initted) for lv in rvq.levels)
    for before, after in zip(norms, norms[1:]):
        assert after < before  # each level's quantisation error is below its residual's energy
    rvq.eval()
    with torch.no_grad():
        errs = [float((rvq(z[None], n_q=n)[0][0] - z).pow(2).mean()) for n in range(1, 5)]
        # plain reference: nearest code of each level on the running residual, summed
        residual, total = z.clone(), torch.zeros_like(z)
        for lv in rvq.levels:
            q = lv.embed[nearest_code(residual, lv.embed)]
            residual, total = residual - q, total + q
        torch.testing.assert_close(rvq(z[None], n_q=4)[0][0], total)
    assert errs == sorted(errs, reverse=True) and errs[-1] < 0.25 * float(z.pow(2).mean())
    torch.testing.assert_close(torch.tensor(errs), torch.tensor(norms[1:]), rtol=1e-4, atol=1e-4)
    # the untouched (random N(0, 1)) codebooks do worse than the fitted ones at every level count
    fresh = ResidualVQ(n_levels=4, num_codes=16, dim=8).eval()
    with torch.no_grad():
        for n, e in zip(range(1, 5), errs):
            assert float((fresh(z[None], n_q=n)[0][0] - z).pow(2).mean()) > e


def test_init_codebooks_rejects_bad_input():
    rvq = ResidualVQ(n_levels=2, num_codes=4, dim=8)
    with pytest.raises(ValueError, match="last dim 4, expected 8"):
        rvq.init_codebooks(torch.randn(10, 4))
    with pytest.raises(ValueError, match="no frames"):
        rvq.init_codebooks(torch.randn(0, 8))


def test_train_codec_initialises_all_levels_at_switch_on():
    torch.manual_seed(0)
    t = torch.arange(3200) / 16000
    waves = torch.stack([0.1 * torch.sin(2 * torch.pi * f * t) for f in (220.0, 440.0, 660.0, 880.0)])
    codec = build_codec(channels=4, strides=(4, 5, 4), dim=8, n_levels=4, codebook_size=16)
    logs: list[str] = []
    train_codec(codec, waves, steps=4, batch=2, lr=1e-3, wave_weight=10.0, stft_weight=0.0, crop=800,
                warmup_steps=2, init_frames=256, log=logs.append, log_every=100)
    assert all(bool(lv.initted) for lv in codec.quantizer.levels)  # dropout reached some; init reached all
    line = [m for m in logs if m.startswith("codebook init on")]
    assert len(line) == 1 and "on 260 frames" in line[0]  # 26 crops of 10 frames
    with pytest.raises(ValueError, match="init_frames=-1"):
        train_codec(codec, waves, steps=1, batch=2, lr=1e-3, wave_weight=1.0, stft_weight=0.0, init_frames=-1)


def test_quant_lr_scale_sets_the_learning_rate_of_the_quantised_steps():
    t = torch.arange(1600) / 16000
    waves = torch.stack([0.1 * torch.sin(2 * torch.pi * f * t) for f in (220.0, 440.0)])

    def trained(steps: int, scale: float) -> dict:
        torch.manual_seed(0)
        codec = build_codec(channels=4, strides=(4, 5, 4), dim=8, n_levels=2, codebook_size=8)
        train_codec(codec, waves, steps=steps, batch=2, lr=1e-2, wave_weight=10.0, stft_weight=0.0, crop=800,
                    warmup_steps=2, init_frames=64, quant_lr_scale=scale)
        return {k: v.clone() for k, v in codec.named_parameters()}

    warm = trained(2, 1.0)
    frozen, moved = trained(4, 1e-9), trained(4, 1.0)
    for k in warm:  # the encoder/decoder weights stay where the warm-up left them at a tiny scale
        torch.testing.assert_close(frozen[k], warm[k], rtol=0, atol=1e-6)
    assert max(float((moved[k] - warm[k]).abs().max()) for k in warm) > 1e-4
    with pytest.raises(ValueError, match="quant_lr_scale=0"):
        train_codec(build_codec(channels=4, dim=8, n_levels=2, codebook_size=8), waves, steps=1, batch=2, lr=1e-3,
                    wave_weight=1.0, stft_weight=0.0, quant_lr_scale=0)
