import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modalab.audio.augment import POLICIES, Policy, mask_along, spec_augment, time_warp


def _runs(mask_row: torch.Tensor) -> list[int]:
    x = torch.cat([torch.tensor([0]), mask_row.int(), torch.tensor([0])])
    d = x.diff()
    return ((d == -1).nonzero().flatten() - (d == 1).nonzero().flatten()).tolist()


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(POLICIES)), n_freq=st.integers(10, 90), n_time=st.integers(5, 400),
       seed=st.integers(0, 2 ** 31 - 1))
def test_audio_specaugment_masks_within_policy_bounds(name, n_freq, n_time, seed):
    pol = POLICIES[name]
    spec = torch.ones(3, n_freq, n_time)
    out, fmask, tmask = spec_augment(spec, name, gen=torch.Generator().manual_seed(seed), return_masks=True)
    t_cap = min(pol.T, int(pol.p * n_time))
    for b in range(3):
        assert sum(_runs(fmask[b])) <= pol.mF * pol.F and all(r <= pol.mF * pol.F for r in _runs(fmask[b]))
        assert int(fmask[b].sum()) <= pol.mF * pol.F and int(tmask[b].sum()) <= pol.mT * t_cap
        # masked cells are exactly the union of the two masks
        expect = fmask[b][:, None] | tmask[b][None, :]
        assert torch.equal(out[b] == 0, expect)


@settings(max_examples=30, deadline=None)
@given(max_w=st.integers(0, 30), n=st.integers(1, 4), size=st.integers(1, 100), seed=st.integers(0, 1000))
def test_audio_single_masks_respect_width(max_w, n, size, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        _, m = mask_along(torch.ones(2, 4, size), -1, max_w, 1, g)
        assert int(m.sum(-1).max()) <= min(max_w, size)


def test_audio_specaugment_deterministic_with_generator():
    spec = torch.randn(4, 80, 300)
    a = spec_augment(spec, "LD", warp=True, gen=torch.Generator().manual_seed(3))
    b = spec_augment(spec, "LD", warp=True, gen=torch.Generator().manual_seed(3))
    c = spec_augment(spec, "LD", warp=True, gen=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_audio_time_warp_keeps_shape_and_endpoints():
    spec = torch.arange(200, dtype=torch.float64).expand(2, 5, 200).clone()
    out = time_warp(spec, 40, torch.Generator().manual_seed(0))
    assert out.shape == spec.shape
    torch.testing.assert_close(out[..., 0], spec[..., 0])
    torch.testing.assert_close(out[..., -1], spec[..., -1])
    assert torch.all(out.diff(dim=-1) >= 0)  # a monotone warp of a ramp stays monotone
    assert torch.equal(time_warp(spec, 0), spec)


def test_audio_custom_policy():
    pol = Policy(W=0, F=5, mF=3, T=4, p=1.0, mT=2)
    _, f, t = spec_augment(torch.ones(8, 40, 50), pol, gen=torch.Generator().manual_seed(0), return_masks=True)
    assert int(f.sum(-1).max()) <= 15 and int(t.sum(-1).max()) <= 8


def test_frequency_mask_width_scales_with_the_number_of_channels():
    from modalab.audio.augment import POLICIES, spec_augment

    gen = torch.Generator().manual_seed(0)
    for n_bins, cap in [(80, 27), (32, 11), (40, 14)]:  # round(27 * n / 80)
        assert POLICIES["LB"].freq_width(n_bins) == cap
        _, fmask, _ = spec_augment(torch.randn(400, n_bins, 300), "LB", gen=gen, return_masks=True)
        widths = fmask.sum(-1)  # one frequency mask per clip in LB
        assert int(widths.max()) <= cap and int(widths.max()) >= cap - 2  # U[0, cap] reaches near cap
