"""Parity of the modules moved from ``nn.MultiheadAttention`` onto modalab's attention (issue 22).

Each ``Old*`` class below is the module as it was before the move (verbatim apart from names).
The old module's state dict loads strictly into the migrated one (through the load-time split of
``in_proj_*``), and outputs and gradients (inputs and every parameter, mapped through the same
split) agree in float64 to 1e-6. ``torch_mha_attention`` also draws the same initial values as
``nn.MultiheadAttention`` from the same seed, so seeded models start where they did.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.audio.adapter import WindowQueryDown
from modalab.audio.tf_attention import TimeFreqAttention
from modalab.layers import Mlp, torch_mha_attention
from modalab.models.pretrained.keymap import KeyMap
from modalab.models.unified import Denoiser, GaussianDiffusion, timestep_embedding
from modalab.vision.clip_vit import MapHead
from tests.layers.parity_helpers import check_parity, close, seeded_

# ------------------------------------------------------------------ the modules before the move


class OldTimeFreqAttention(nn.Module):
    def __init__(self, dim: int = 512, heads: int = 8, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.time_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.freq_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.fusion = nn.Linear(2 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, T, Fq, D = x.shape
        h = self.norm(x)
        x_t = h.mean(dim=2)
        x_t = self.time_attn(x_t, x_t, x_t, need_weights=False)[0]
        x_f = h.mean(dim=1)
        x_f = self.freq_attn(x_f, x_f, x_f, need_weights=False)[0]
        fused = torch.cat([x_t.unsqueeze(2).expand(B, T, Fq, D),
                           x_f.unsqueeze(1).expand(B, T, Fq, D)], dim=-1)
        return x + self.fusion(fused)


class OldWindowQueryDown(nn.Module):
    def __init__(self, dim: int, k: int, heads: int = 4):
        super().__init__()
        self.k = k
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        pad = (-T) % self.k
        xp = F.pad(x, (0, 0, 0, pad))
        n_win = xp.shape[1] // self.k
        win = self.norm(xp.reshape(B * n_win, self.k, D))
        key_pad = torch.arange(xp.shape[1], device=x.device) >= T
        key_pad = key_pad.view(1, n_win, self.k).expand(B, -1, -1).reshape(B * n_win, self.k)
        q = self.query.expand(B * n_win, 1, D)
        out = self.attn(q, win, win, key_padding_mask=key_pad, need_weights=False)[0]
        return out.view(B, n_win, D)


class OldDenoiser(Denoiser):
    """The denoiser with its ``nn.MultiheadAttention`` and the forward that called it (plus the
    ``.to(x.dtype)`` on the timestep embedding the new one has, so that it runs in float64)."""

    def __init__(self, in_channels: int, cond_dim: int, channels: int = 32, heads: int = 4) -> None:
        super().__init__(in_channels, cond_dim, channels, heads)
        self.attn = nn.MultiheadAttention(2 * channels, heads, kdim=cond_dim, vdim=cond_dim,
                                          batch_first=True)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor, cond_pad: Tensor | None = None) -> Tensor:
        if cond_pad is None:
            keep = torch.ones_like(cond[..., :1])
        else:
            keep = (~cond_pad).to(cond.dtype)[..., None]
        pooled = (cond * keep).sum(1) / keep.sum(1).clamp_min(1)
        e = self.t_mlp(timestep_embedding(t, self.channels).to(x.dtype)) + self.c_proj(pooled)
        h0 = self.down1(self.inp(x), e)
        h = self.mid1(self.down(h0), e)
        b, ch, hh, ww = h.shape
        seq = h.flatten(2).transpose(1, 2)
        att, _ = self.attn(self.attn_norm(seq), cond, cond, key_padding_mask=cond_pad)
        h = (seq + att).transpose(1, 2).reshape(b, ch, hh, ww)
        h = self.up(self.mid2(h, e))
        return self.out(self.up1(torch.cat([h, h0], 1), e))


class OldMapHead(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_hidden: int, act, norm_eps: float) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden, act)

    def forward(self, x: Tensor) -> Tensor:
        probe = self.probe.expand(x.shape[0], -1, -1)
        h = self.attention(probe, x, x, need_weights=False)[0]
        return (h + self.mlp(self.norm(h)))[:, 0]


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("kv_dim", [None, 16, 8])
def test_init_draws_the_same_values_as_nn_multihead_attention(kv_dim):
    torch.manual_seed(3)
    ref = nn.MultiheadAttention(16, 4, kdim=kv_dim, vdim=kv_dim, batch_first=True)
    after_ref = torch.rand(4)
    torch.manual_seed(3)
    new = torch_mha_attention(16, 4, kv_dim=kv_dim)
    assert torch.equal(torch.rand(4), after_ref)  # the same number of draws from the generator
    loaded = torch_mha_attention(16, 4, kv_dim=kv_dim)
    loaded.load_state_dict(ref.state_dict(), strict=True)
    for name, p in new.state_dict().items():
        assert torch.equal(p, loaded.state_dict()[name]), name


def test_builds_on_the_meta_device_like_any_module():
    """The pretrained loaders build towers under ``torch.device("meta")`` before loading weights."""
    with torch.device("meta"):
        attn = torch_mha_attention(16, 4, kv_dim=8)
        head = MapHead(16, 4, 32, F.gelu, 1e-6)
    assert all(p.is_meta for p in [*attn.parameters(), *head.parameters()])


@pytest.mark.parametrize("heads", [1, 4])
def test_time_freq_attention_matches_before(heads):
    torch.manual_seed(0)
    old = seeded_(OldTimeFreqAttention(16, heads, dropout=0.1).double().eval(), 1)
    new = TimeFreqAttention(16, heads, dropout=0.1).double().eval()
    check_parity(old, new, lambda m, x: m(x), [torch.randn(2, 5, 3, 16, dtype=torch.float64)])


def test_time_freq_attention_dropout_acts_in_training_only():
    torch.manual_seed(0)
    m = TimeFreqAttention(16, 4, dropout=0.5).double()
    x = torch.randn(2, 6, 3, 16, dtype=torch.float64)
    ev = m.eval()(x)
    close(m(x), ev)
    assert not torch.allclose(m.train()(x), ev)


@pytest.mark.parametrize("t", [12, 10])  # 10: the last window holds 2 padded frames
def test_window_query_downsampler_matches_before(t):
    torch.manual_seed(0)
    old = seeded_(OldWindowQueryDown(16, 4).double(), 2)
    new = WindowQueryDown(16, 4).double()
    check_parity(old, new, lambda m, x: m(x), [torch.randn(3, t, 16, dtype=torch.float64)])


@pytest.mark.parametrize("cond_dim", [16, 12])  # 16 = 2c: nn.MultiheadAttention's fused layout
def test_denoiser_cross_attention_matches_before(cond_dim):
    torch.manual_seed(0)
    old = seeded_(OldDenoiser(1, cond_dim, channels=8, heads=2).double(), 3)
    new = Denoiser(1, cond_dim, channels=8, heads=2).double()
    pad = torch.tensor([[False, False, True, True], [False, False, False, False]])

    def run(m, x, cond):
        return m(x, torch.tensor([3, 17]), cond, pad)

    check_parity(old, new, run, [torch.randn(2, 1, 8, 8, dtype=torch.float64),
                                 torch.randn(2, 4, cond_dim, dtype=torch.float64)])


def test_denoiser_fully_padded_condition_gives_numbers():
    """nn.MultiheadAttention returned NaN for a query with every key padded; now its attention
    output is zero (the residual carries the features)."""
    torch.manual_seed(0)
    den = Denoiser(1, 12, channels=8, heads=2)
    pad = torch.tensor([[True, True], [False, True]])
    out = den(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), torch.randn(2, 2, 12), pad)
    assert torch.isfinite(out).all()


def test_map_head_matches_before():
    torch.manual_seed(0)
    old = seeded_(OldMapHead(16, 4, 32, F.gelu, 1e-6).double(), 4)
    new = MapHead(16, 4, 32, F.gelu, 1e-6).double()
    check_parity(old, new, lambda m, x: m(x), [torch.randn(3, 7, 16, dtype=torch.float64)])


def test_keymap_in_proj_round_trip():
    """A library's fused ``in_proj`` splits into our q, k, v and fuses back unchanged."""
    torch.manual_seed(0)
    theirs_mod = nn.MultiheadAttention(8, 2, batch_first=True)
    ours_mod = torch_mha_attention(8, 2)
    km = KeyMap()
    km.in_proj("attn", "head.attention")
    km.linear("attn.out_proj", "head.attention.out_proj")
    theirs = {f"head.attention.{k}": v for k, v in theirs_mod.state_dict().items()}
    shapes = {f"attn.{k}": v.shape for k, v in ours_mod.state_dict().items()}
    ours = km.to_ours(theirs, shapes, "test")
    ours_mod.load_state_dict({k[len("attn."):]: v for k, v in ours.items()}, strict=True)
    x = torch.randn(2, 3, 8)
    close(ours_mod(x), theirs_mod(x, x, x, need_weights=False)[0])
    back = km.to_theirs(ours)
    assert back.keys() == theirs.keys()
    for k, v in theirs.items():
        assert torch.equal(back[k], v), k


def train_denoisers(steps: int, channels: int) -> tuple[list[float], list[float]]:
    """Float32 DDPM training of the old and new Denoiser from the same weights, data and draws."""
    torch.manual_seed(0)
    old = OldDenoiser(1, 32, channels=channels, heads=4)
    new = Denoiser(1, 32, channels=channels, heads=4)
    new.load_state_dict(old.state_dict(), strict=True)
    losses = []
    for den in (old, new):
        diff = GaussianDiffusion(den, timesteps=100)
        opt = torch.optim.AdamW(den.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        x0 = torch.rand(64, 1, 16, 16, generator=g) * 2 - 1
        cond = torch.randn(64, 5, 32, generator=g)
        pad = torch.zeros(64, 5, dtype=torch.bool)
        pad[::2, 3:] = True  # half the rows have two padded condition tokens
        out = []
        for _ in range(steps):
            i = torch.randint(0, 64, (16,), generator=g)
            loss = diff.loss(x0[i], cond[i], pad[i], generator=g)
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        losses.append(out)
    return losses[0], losses[1]


@pytest.mark.parametrize("steps, channels", [(20, 8), pytest.param(200, 16, marks=pytest.mark.slow)])
def test_denoiser_float32_training_follows_the_old_one(steps, channels):
    old, new = train_denoisers(steps, channels)
    torch.testing.assert_close(torch.tensor(new), torch.tensor(old), rtol=1e-5, atol=0.0)
