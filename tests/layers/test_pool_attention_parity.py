"""Parity of the two attention pools moved onto ``layers.MultiHeadAttention`` (issue 22):
NaViT's packed ``vision.packing.AttentionPool`` (its own SDPA call before) and the video
``video.temporal.AttentionPool`` (a hand-written softmax before); and of the MoME experts moved
onto ``layers.Mlp``. ``Old*`` are the classes as they
were (verbatim apart from names). Same seed -> same initial values; the old state dict loads
strictly; outputs and gradients agree in float64 to 1e-6.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.video.temporal import AttentionPool as TemporalPool
from modalab.vision.packing import AttentionPool as PackedPool

from tests.layers.parity_helpers import check_parity, close, seeded_


class OldPackedPool(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, d = tokens.shape
        m = 1 if mask is None else mask.shape[1]
        h, dh = self.heads, d // self.heads
        q = self.q(self.query).view(1, 1, h, dh).transpose(1, 2).expand(b, h, m, dh)
        kv = self.kv(tokens).view(b, n, 2, h, dh).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None]
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, m, d))


class OldTemporalPool(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))
        self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        logits = self.key(x) @ self.query / x.shape[-1] ** 0.5
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        w = logits.softmax(-1)
        return torch.einsum("bt,btd->bd", w, self.value(x))


@pytest.mark.parametrize("old_cls, new_cls, args", [(OldPackedPool, PackedPool, (16, 4)),
                                                     (OldTemporalPool, TemporalPool, (16,))])
def test_same_seed_same_start(old_cls, new_cls, args):
    torch.manual_seed(5)
    old = old_cls(*args)
    after_old = torch.rand(3)
    torch.manual_seed(5)
    new = new_cls(*args)
    assert torch.equal(torch.rand(3), after_old)
    x = torch.randn(2, 6, 16)
    new_from_old = new_cls(*args)
    new_from_old.load_state_dict(old.state_dict(), strict=True)
    for name, p in new.state_dict().items():
        assert torch.equal(p, new_from_old.state_dict()[name]), name
    close(new(x), old(x))


@pytest.mark.parametrize("masked", [False, True])
def test_packed_pool_matches_before(masked):
    torch.manual_seed(0)
    old = seeded_(OldPackedPool(16, 4).double(), 6)
    new = PackedPool(16, 4).double()
    tokens = torch.randn(2, 9, 16, dtype=torch.float64)
    mask = torch.rand(2, 3, 9) < 0.5
    mask[..., 0] = True  # every slot needs a key (pool_packed guarantees it)
    check_parity(old, new, lambda m, t: m(t, mask if masked else None), [tokens])


@pytest.mark.parametrize("masked", [False, True])
def test_temporal_pool_matches_before(masked):
    torch.manual_seed(0)
    old = seeded_(OldTemporalPool(16).double(), 7)
    new = TemporalPool(16).double()
    mask = torch.tensor([[True, True, False, True, False], [True, False, False, False, False]])
    check_parity(old, new, lambda m, x: m(x, mask if masked else None),
                 [torch.randn(2, 5, 16, dtype=torch.float64)])


def test_mome_experts_on_layers_mlp_match_the_sequential_ones():
    """fusion/mome's experts were ``nn.Sequential(Linear, GELU, Linear)``; now ``layers.Mlp``: the
    same draws from the same seed, old keys load, identical outputs."""
    from modalab.fusion.mome import MoMEBlock

    def old_ffn(dim: int, mlp_ratio: int = 4) -> nn.Sequential:
        return nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    torch.manual_seed(9)
    new = MoMEBlock(16, 4, num_modalities=2, joint_expert=True)
    torch.manual_seed(9)
    old = MoMEBlock(16, 4, num_modalities=2, joint_expert=True)
    torch.manual_seed(9)  # rebuild the old block's parts in the constructor's order
    old.norm1, old.attn, old.norm2 = (nn.LayerNorm(16), type(old.attn)(4, *[nn.Linear(16, 16) for _ in range(4)]),
                                      nn.LayerNorm(16))
    old.experts = nn.ModuleList(old_ffn(16) for _ in range(2))
    old.joint = old_ffn(16)
    for (name, p), q in zip(new.state_dict().items(), old.state_dict().values()):
        assert torch.equal(p, q), name
    fresh = MoMEBlock(16, 4, num_modalities=2, joint_expert=True)
    fresh.load_state_dict(old.state_dict(), strict=True)
    x, ids = torch.randn(2, 5, 16), torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])
    torch.testing.assert_close(fresh(x, ids)[0], old(x, ids)[0], rtol=0, atol=0)
