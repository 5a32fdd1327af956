"""ViT at any resolution: default behaviour unchanged, position encodings, dynamic grids, FLIP."""

import pytest
import torch

from modalab.vision.masking import num_kept
from modalab.vision.pos_embed import resample_pos_embed
from modalab.vision.vit import VisionTransformer


def _reference_forward_tokens(m, images):
    """The fixed-grid ViT written out: conv patches, cls, + learned table, blocks, norm."""
    x = m.patch_embed.proj(images).flatten(2).transpose(1, 2)  # (B, N, D)
    x = torch.cat([m.cls_token.expand(len(x), -1, -1), x], 1) + m.pos_embed
    for blk in m.transformer.blocks:
        x = blk(x)
    return m.norm(x)


def test_defaults_unchanged():
    torch.manual_seed(0)
    m = VisionTransformer()
    assert m.pos_embed.shape == (1, 1 + 64, 128) and m.grid == (8, 8) and m.num_patches == 64
    assert m.patch_dropout is None and m.rope is None and m.attn_pool is None
    keys = {k.split(".")[0] for k in m.state_dict()}
    assert keys == {"patch_embed", "cls_token", "pos_embed", "transformer", "norm"}
    x = torch.randn(2, 3, 32, 32)
    m.train()  # no dropout of any kind by default
    torch.testing.assert_close(m.forward_tokens(x), _reference_forward_tokens(m, x))
    assert m(x).shape == (2, 128)
    torch.testing.assert_close(m(x), m.forward_tokens(x)[:, 0])
    with pytest.raises(ValueError, match="differs from the trained grid"):
        m(torch.randn(1, 3, 32, 48))


def test_mean_pool_default_path():
    torch.manual_seed(0)
    m = VisionTransformer(16, 4, 1, 32, 1, 4, pool="mean").eval()
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(m(x), m.forward_tokens(x)[:, 1:].mean(1))


def test_learned_dynamic_resamples():
    torch.manual_seed(0)
    m = VisionTransformer(16, 4, 1, 32, 1, 4, dynamic_size=True).eval()
    x = torch.randn(1, 1, 12, 28)  # grid (3, 7)
    ref = m.patch_embed.proj(x).flatten(2).transpose(1, 2)
    ref = torch.cat([m.cls_token, ref], 1) + resample_pos_embed(m.pos_embed, (3, 7), (4, 4))
    for blk in m.transformer.blocks:
        ref = blk(ref)
    torch.testing.assert_close(m.forward_tokens(x), m.norm(ref))


@pytest.mark.parametrize("pos", ["sincos", "factorized", "rope", "none"])
def test_any_grid_and_gradients(pos):
    torch.manual_seed(0)
    m = VisionTransformer(16, 4, 3, 32, 2, 4, pos_encoding=pos)
    for h, w in [(4, 4), (8, 40), (36, 12)]:
        x = torch.randn(2, 3, h, w)
        out = m(x)
        assert out.shape == (2, 32) and torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()  # a plain sum of LayerNorm outputs has no gradient
    assert m.patch_embed.proj.weight.grad.abs().sum() > 0
    if pos == "factorized":
        assert m.factorized.row_embed.grad.abs().sum() > 0


def test_positions_matter():
    """With a position encoding, permuting the patches changes the output; with none it does not."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 12)
    for pos, changes in [("sincos", True), ("rope", True), ("factorized", True), ("none", False)]:
        m = VisionTransformer(16, 4, 3, 32, 1, 4, pool="mean", pos_encoding=pos).eval()
        # a horizontal flip of whole patches permutes the tokens (same multiset of patch contents)
        x_perm = x.unflatten(-1, (3, 4)).flip(-2).flatten(-2)
        diff = (m(x) - m(x_perm)).abs().max()
        assert (diff > 1e-4) == changes, (pos, float(diff))


def test_embed_flat_equals_conv():
    torch.manual_seed(0)
    m = VisionTransformer(16, 4, 3, 32, 1, 4)
    from modalab.vision.resolution import patchify

    img = torch.randn(3, 8, 12)
    flat, grid = patchify(img, 4)
    conv = m.patch_embed.proj(img[None]).flatten(2).transpose(1, 2)[0]
    torch.testing.assert_close(m.patch_embed.embed_flat(flat), conv, rtol=0, atol=1e-5)


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_flip_patch_dropout(pos):
    torch.manual_seed(0)
    m = VisionTransformer(16, 4, 3, 32, 1, 4, pos_encoding=pos, patch_dropout=0.5)
    x = torch.randn(3, 3, 16, 16)
    m.train()
    assert m.forward_tokens(x).shape == (3, 1 + num_kept(16, 0.5), 32)
    out = m(x)
    (out * torch.randn_like(out)).sum().backward()
    assert m.cls_token.grad.abs().sum() > 0
    m.eval()
    full = m.forward_tokens(x)
    assert full.shape == (3, 17, 32)
    ref = VisionTransformer(16, 4, 3, 32, 1, 4, pos_encoding=pos)
    ref.load_state_dict(m.state_dict())
    torch.testing.assert_close(full, ref.eval().forward_tokens(x))  # eval = no dropout at all


def test_constructor_errors():
    with pytest.raises(ValueError, match="pos_encoding"):
        VisionTransformer(pos_encoding="alibi")
    with pytest.raises(ValueError, match="pool"):
        VisionTransformer(pool="max")
    with pytest.raises(ValueError, match="divisible by 4"):
        VisionTransformer(width=24, heads=4, pos_encoding="rope")  # head_dim 6
