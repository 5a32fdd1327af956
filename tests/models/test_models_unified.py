"""Unified model: loss masking, causality, AR sampling, DDIM with an oracle, CFG, task routing."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modalab.models.unified import (
    Denoiser,
    GaussianDiffusion,
    UnifiedModel,
    UnifiedTransformer,
)
from modalab.vision.quantizers import VectorQuantizer
from modalab.vision.tokenizer import ImageTokenizer


V, K, N = 10, 8, 4


def tiny() -> UnifiedTransformer:
    torch.manual_seed(0)
    return UnifiedTransformer(V, K, N, dim=32, depth=2, heads=4, max_text=6).eval()


def test_understand_loss_is_text_only_cross_entropy():
    m = tiny()
    codes, text = torch.randint(0, K, (3, N)), torch.randint(0, V, (3, 5))
    ids = m.understand_sequence(codes, text)
    assert ids.shape == (3, N + 3 + 5) and (ids[:, 2 : 2 + N] == codes + V).all()
    logits = m.logits(ids)
    manual = torch.stack([F.cross_entropy(logits[b, N + 2 + i], text[b, i])
                          for b in range(3) for i in range(5)]).mean()
    assert torch.allclose(m.understand_loss(codes, text), manual, atol=1e-6)


def test_generate_loss_is_image_code_cross_entropy_over_code_range():
    m = tiny()
    codes, text = torch.randint(0, K, (2, N)), torch.randint(0, V, (2, 3))
    logits = m.logits(m.generate_sequence(text, codes))
    manual = torch.stack([F.cross_entropy(logits[b, 3 + 1 + i, V : V + K], codes[b, i])
                          for b in range(2) for i in range(N)]).mean()
    assert torch.allclose(m.generate_loss(text, codes), manual, atol=1e-6)


def test_causal_and_padding_masks():
    m = tiny()
    ids = m.generate_sequence(torch.randint(0, V, (1, 4)), torch.randint(0, K, (1, N)))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] - V + 1) % K + V
    assert torch.allclose(m.logits(ids)[:, :-1], m.logits(changed)[:, :-1], atol=1e-6)
    text, codes = torch.randint(0, V, (2, 4)), torch.randint(0, K, (2, N))
    pad = torch.tensor([[False, False, True, True], [False, False, False, False]])
    other = text.clone()
    other[0, 2:] = (other[0, 2:] + 3) % V  # what sits under the padding must not matter
    assert torch.allclose(m.generate_loss(text, codes, pad), m.generate_loss(other, codes, pad),
                          atol=1e-6)
    upad = torch.tensor([[False, False, True, True]] * 2)
    assert torch.allclose(m.understand_loss(codes, text, upad),
                          m.understand_loss(codes, text[:, :2]), atol=1e-6)


def test_sampling_stays_in_range_and_greedy_matches_logits():
    m = tiny()
    text = torch.randint(0, V, (3, 4))
    codes = m.generate_codes(text, temperature=1.0, top_k=3,
                             generator=torch.Generator().manual_seed(0))
    assert codes.shape == (3, N) and int(codes.min()) >= 0 and int(codes.max()) < K
    greedy = m.generate_codes(text, temperature=0)
    first = m.logits(m.generate_sequence(text))[:, -1, V : V + K].argmax(-1)
    assert torch.equal(greedy[:, 0], first)
    answer = m.answer(codes, max_new_tokens=5, eos_id=0)
    assert answer.shape == (3, 5) and int(answer.max()) < V


class Oracle(nn.Module):
    """Predicts the exact noise for a known x0: DDIM must then land on x0."""

    def __init__(self, x0: torch.Tensor, alpha_bar: torch.Tensor) -> None:
        super().__init__()
        self.x0, self.ab = x0, alpha_bar
        self.null_cond = nn.Parameter(torch.zeros(1, 1, 2, dtype=x0.dtype))

    def forward(self, x, t, cond, cond_pad):
        ab = self.ab[t].view(-1, 1, 1, 1).to(x.dtype)
        return (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_ddim_with_oracle_recovers_x0(guidance):
    torch.manual_seed(0)
    x0 = torch.rand(2, 1, 4, 4) * 2 - 1
    diff = GaussianDiffusion(nn.Identity(), timesteps=100)
    diff.denoiser = Oracle(x0, diff.alpha_bar)
    out = diff.ddim_sample((2, 1, 4, 4), torch.zeros(2, 3, 2), steps=7, guidance=guidance,
                           clip=False, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out, x0, atol=1e-4)


def test_q_sample_and_cfg_combination():
    torch.manual_seed(0)
    den = Denoiser(1, cond_dim=8, channels=8, heads=2)
    diff = GaussianDiffusion(den, timesteps=50)
    x0, noise, t = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.tensor([0, 49])
    ab = diff.alpha_bar[t].view(-1, 1, 1, 1)
    assert torch.allclose(diff.q_sample(x0, t, noise), ab.sqrt() * x0 + (1 - ab).sqrt() * noise)
    with torch.no_grad():
        den.null_cond.normal_()
    cond = torch.randn(2, 3, 8)
    eps_c = den(x0, t, cond, None)
    eps_u = den(x0, t, den.null_cond.expand(2, 1, 8), None)  # null = one valid token
    got = diff.guided_eps(x0, t, cond, None, guidance=2.5)
    assert torch.allclose(got, eps_u + 2.5 * (eps_c - eps_u), atol=1e-5)


def test_diffusion_loss_trains_shared_model_through_condition():
    m = tiny().train()
    den = Denoiser(1, cond_dim=32, channels=8, heads=2)
    diff = GaussianDiffusion(den, timesteps=50)
    text = torch.randint(0, V, (2, 3))
    cond = m.text_condition(text)
    assert cond.shape == (2, 4, 32)
    loss = diff.loss(torch.rand(2, 1, 8, 8) * 2 - 1, cond, p_uncond=0.0,
                     generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert m.tok_emb.weight.grad.abs().sum() > 0 and den.inp.weight.grad.abs().sum() > 0


def test_task_switch_routes_and_validates():
    torch.manual_seed(0)
    tokenizer = ImageTokenizer(VectorQuantizer(K, 4, kmeans_init=False), channels=8,
                               num_down=2, latent_dim=4).eval()
    den = Denoiser(1, cond_dim=32, channels=8, heads=2)
    model = UnifiedModel(tiny(), tokenizer, GaussianDiffusion(den, timesteps=20),
                         image_shape=(1, 8, 8), token_grid=(2, 2))
    img = torch.rand(2, 1, 8, 8)
    assert model("understand", image=img, max_new_tokens=3).shape == (2, 3)
    text = torch.randint(0, V, (2, 3))
    ar = model("generate", text=text, path="ar", temperature=0)
    dm = model("generate", text=text, path="diffusion", steps=3, guidance=2.0)
    for out in (ar, dm):
        assert out.shape == (2, 1, 8, 8) and float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(ValueError, match="expected 'understand' or 'generate'"):
        model("caption", text=text)
    with pytest.raises(ValueError, match="needs a diffusion"):
        UnifiedModel(tiny())("generate", text=text, path="diffusion")


def test_tiny_unified_model_learns_both_directions():
    torch.manual_seed(0)
    m = UnifiedTransformer(V, K, N, dim=32, depth=1, heads=2, max_text=2).train()
    codes = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0]])
    text = torch.tensor([[3, 1], [7, 2]])
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(120):
        loss = m.understand_loss(codes, text) + m.generate_loss(text, codes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    assert torch.equal(m.answer(codes, 2), text)
    assert torch.equal(m.generate_codes(text, temperature=0), codes)
