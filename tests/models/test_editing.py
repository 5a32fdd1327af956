"""Region editing (models/editing.py): the AR conditional against brute-force enumeration of the
joint, codes outside the region untouched; RePaint inpainting against plain DDIM and an oracle."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from modalab.models.editing import ar_edit_region, code_loglik, region_conditional, repaint_ddim
from modalab.models.unified import Denoiser, GaussianDiffusion, UnifiedTransformer


def _tiny_ar(K: int = 3, N: int = 4) -> UnifiedTransformer:
    torch.manual_seed(0)
    ar = UnifiedTransformer(text_vocab=7, codebook_size=K, image_tokens=N, dim=16, depth=1, heads=2, max_text=4)
    with torch.no_grad():
        for p in ar.parameters():  # larger weights: conditionals far from uniform
            p.mul_(4.0)
    return ar.double().eval()


def test_region_conditional_matches_brute_force_enumeration():
    K, N, B = 3, 4, 2
    ar = _tiny_ar(K, N)
    text = torch.randint(3, 7, (B, 4))
    pad = torch.tensor([[False] * 4, [False, False, True, True]])
    allc = torch.tensor(list(itertools.product(range(K), repeat=N)))  # (K^N, N)
    codes = torch.randint(0, K, (B, N))
    for b in range(B):
        with torch.no_grad():
            joint = code_loglik(ar, text[b : b + 1].expand(len(allc), -1), pad[b : b + 1].expand(len(allc), -1),
                                allc).sum(1)  # (K^N,) log p(codes | text)
        assert abs(float(joint.logsumexp(0))) < 1e-5  # a distribution over all code strings
        for i in range(N):
            rest = [j for j in range(N) if j != i]
            match = (allc[:, rest] == codes[b, rest]).all(1)  # the K strings agreeing off position i
            ref = joint[match] - joint[match].logsumexp(0)  # ordered by the value at i (0..K-1)
            got = region_conditional(ar, text[b : b + 1], pad[b : b + 1], codes[b : b + 1], i, chunk=2)[0]
            torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=0)


def test_edit_keeps_codes_outside_the_region_and_greedy_one_token_is_the_argmax():
    K, N = 3, 4
    ar = _tiny_ar(K, N)
    text, codes = torch.randint(3, 7, (5, 4)), torch.randint(0, K, (5, N))
    region = torch.tensor([False, True, True, False])
    out = ar_edit_region(ar, text, None, codes, region, temperature=1.0, sweeps=2,
                         generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[:, ~region], codes[:, ~region]) and out.shape == codes.shape
    assert int(out.max()) < K and int(out.min()) >= 0
    one = torch.tensor([False, False, True, False])
    g = ar_edit_region(ar, text, None, codes, one, temperature=0.0, sweeps=1)
    assert torch.equal(g[:, 2], region_conditional(ar, text, None, g, 2).argmax(-1))
    with pytest.raises(ValueError, match="bool mask of shape"):
        ar_edit_region(ar, text, None, codes, torch.tensor([0, 1, 1, 0]))


def _diffusion() -> GaussianDiffusion:
    torch.manual_seed(0)
    return GaussianDiffusion(Denoiser(1, 8, channels=8), timesteps=100).eval()


def test_repaint_with_nothing_known_is_plain_ddim_and_with_everything_known_is_the_input():
    d = _diffusion()
    cond, known = torch.randn(3, 5, 8), torch.rand(3, 1, 8, 8) * 2 - 1
    none = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    for guidance, interval in ((1.0, None), (3.0, (0, 50))):
        a = repaint_ddim(d, known, none, cond, steps=7, guidance=guidance, guidance_interval=interval,
                         generator=torch.Generator().manual_seed(4))
        b = d.ddim_sample(known.shape, cond, steps=7, guidance=guidance, guidance_interval=interval,
                          generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(a, b)
    full = repaint_ddim(d, known, ~none, cond, steps=7, generator=torch.Generator().manual_seed(4))
    assert torch.equal(full, known)


class _Oracle(nn.Module):
    """The true noise predictor when the data is one image ``target`` (B, C, H, W)."""

    def __init__(self, target: torch.Tensor, alpha_bar: torch.Tensor) -> None:
        super().__init__()
        self.target, self.ab = target, alpha_bar
        self.null_cond = nn.Parameter(torch.zeros(1, 1, 4))

    def forward(self, x, t, cond, cond_pad=None):
        ab = self.ab[t].view(-1, 1, 1, 1)
        return (x - ab.sqrt() * self.target) / (1 - ab).sqrt()


def test_repaint_with_the_true_noise_predictor_fills_the_region_with_the_data():
    d = _diffusion()
    target = torch.rand(2, 1, 8, 8) * 2 - 1
    d.denoiser = _Oracle(target, d.alpha_bar)
    keep = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    keep[..., :4, :] = True
    known = torch.where(keep, target, torch.zeros_like(target))  # unknown half blanked
    out = repaint_ddim(d, known, keep, torch.zeros(2, 3, 4), steps=10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, target, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="4-d bool mask"):
        repaint_ddim(d, known, keep.float(), torch.zeros(2, 3, 4))


@pytest.mark.parametrize("chunk", [4096, 8, 3])
def test_cached_region_conditional_and_edit_equal_the_uncached_reference(chunk):
    """Prefix caching (keys and values of the shared prefix repeated for the K candidates) gives
    the same conditionals, at every position, padded prompts and chunking included (float64)."""
    torch.manual_seed(5)
    ar = UnifiedTransformer(text_vocab=9, codebook_size=5, image_tokens=6, dim=24, depth=2, heads=4,
                            max_text=4).double().eval()
    text, codes = torch.randint(0, 9, (4, 4)), torch.randint(0, 5, (4, 6))
    pad = torch.zeros(4, 4, dtype=torch.bool)
    pad[1, 2:] = True
    pad[3, 3:] = True
    for i in range(6):
        got = region_conditional(ar, text, pad, codes, i, chunk=chunk, use_cache=True)
        ref = region_conditional(ar, text, pad, codes, i, chunk=chunk, use_cache=False)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    region = torch.tensor([False, True, False, True, True, False])
    edits = [ar_edit_region(ar, text, pad, codes, region, temperature=1.0, sweeps=2, use_cache=c,
                            generator=torch.Generator().manual_seed(3)) for c in (True, False)]
    assert torch.equal(edits[0], edits[1]) and torch.equal(edits[0][:, ~region], codes[:, ~region])
