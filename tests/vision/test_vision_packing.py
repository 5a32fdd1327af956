"""NaViT packing: greedy packing, layout, block-diagonal attention, exactness against one image alone."""

import pytest
import torch

from modalab.vision.masking import num_kept
from modalab.vision.packing import AttentionPool, greedy_pack, pack_images, pool_packed
from modalab.vision.resolution import patchify
from modalab.vision.vit import VisionTransformer

SIZES = [(8, 16), (12, 4), (16, 16), (4, 24), (20, 8), (4, 4), (24, 12)]


def _images(seed=0, c=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(c, h, w, generator=g) for h, w in SIZES]


def test_greedy_pack_fits_and_covers():
    lengths = [5, 9, 3, 7, 2, 8, 1, 6]
    groups = greedy_pack(lengths, 10)
    assert sorted(i for g in groups for i in g) == list(range(8))
    assert all(sum(lengths[i] for i in g) <= 10 for g in groups)
    # first-fit decreasing: 9, 8, 7, 6, 5 open sequences; 3 joins 7, 2 joins 8, 1 joins 9
    assert sorted(sorted(lengths[i] for i in g) for g in groups) == [[1, 9], [2, 8], [3, 7], [5], [6]]
    with pytest.raises(ValueError, match="max_seq_len"):
        greedy_pack([11], 10)


def test_greedy_pack_fill_on_many_small_items():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 120, (400,), generator=g).tolist()
    groups = greedy_pack(lengths, 512)
    assert sum(lengths) / (len(groups) * 512) > 0.97


def test_pack_layout():
    imgs = _images()
    b = pack_images(imgs, 4, max_seq_len=40)
    assert b.num_images == len(imgs) and b.patches.shape[1:] == (40, 48)
    for i, img in enumerate(imgs):
        s, a = int(b.seq_index[i]), int(b.start[i])
        flat, grid = patchify(img, 4)
        n = flat.shape[0]
        assert b.grids[i] == grid and bool(b.prefix_mask[s, a]) and not b.prefix_mask[s, a + 1 : a + 1 + n].any()
        assert torch.all(b.image_ids[s, a : a + 1 + n] == i)
        torch.testing.assert_close(b.patches[s, a + 1 : a + 1 + n], flat)
        assert b.rows[s, a + 1 : a + 1 + n].max() == grid[0] - 1 and b.cols[s, a + 1 : a + 1 + n].max() == grid[1] - 1
        assert i in b.slots[s].tolist()
    total = sum(1 + (h // 4) * (w // 4) for h, w in SIZES)
    assert int(b.valid.sum()) == total and b.fill() == pytest.approx(total / b.image_ids.numel())


def test_attn_mask_block_diagonal():
    b = pack_images(_images(), 4, max_seq_len=40)
    m = b.attn_mask()[:, 0]  # (S, L, L)
    ids = b.image_ids
    for s in range(ids.shape[0]):
        for i in range(0, 40, 3):
            for j in range(0, 40, 5):
                assert bool(m[s, i, j]) == (int(ids[s, i]) == int(ids[s, j]))
    assert torch.all(m.any(-1))  # every query has a key (no NaN rows in SDPA)


@pytest.mark.parametrize("pos", ["learned", "sincos", "factorized", "rope", "none"])
@pytest.mark.parametrize("pool", ["cls", "mean", "attn"])
def test_packed_equals_alone(pos, pool):
    torch.manual_seed(0)
    model = VisionTransformer(16, 4, 3, 32, 2, 4, pool=pool, pos_encoding=pos, dynamic_size=True).eval()
    imgs = _images()
    b = pack_images(imgs, 4, max_seq_len=48)
    assert b.patches.shape[0] < len(imgs)  # really packed
    with torch.no_grad():
        packed = model.forward_packed(b)
        alone = torch.cat([model(img[None]) for img in imgs])
    torch.testing.assert_close(packed, alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_packed_gradients_equal_alone(pos):
    torch.manual_seed(0)
    model = VisionTransformer(16, 4, 3, 32, 2, 4, pos_encoding=pos, dynamic_size=True).double()
    imgs = [x.double() for x in _images()]
    w = torch.randn(len(imgs), 32, dtype=torch.float64)
    (model.forward_packed(pack_images(imgs, 4, max_seq_len=48)) * w).sum().backward()
    g_packed = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    (torch.cat([model(x[None]) for x in imgs]) * w).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(g_packed[n], p.grad, rtol=1e-9, atol=1e-10, msg=n)


def test_one_image_per_sequence_layout_matches():
    """Pad-to-max / bucketing layouts (one image per row) give the same outputs as packing."""
    torch.manual_seed(0)
    model = VisionTransformer(16, 4, 3, 32, 2, 4, pos_encoding="rope").eval()
    imgs = _images()
    rows = pack_images(imgs, 4, groups=[[i] for i in range(len(imgs))])
    assert rows.patches.shape[0] == len(imgs) and rows.patches.shape[1] == max(1 + h * w // 16 for h, w in SIZES)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_packed(rows), model.forward_packed(pack_images(imgs, 4, 64)),
                                   rtol=0, atol=1e-5)


def test_token_dropping_rate_and_function():
    imgs = _images()
    g = torch.Generator().manual_seed(0)
    b = pack_images(imgs, 4, max_seq_len=40, drop=0.5, generator=g)
    for i, (h, w) in enumerate(SIZES):
        n = (h // 4) * (w // 4)
        assert int((b.image_ids == i).sum()) == 1 + num_kept(n, 0.5)
        sel = (b.image_ids == i) & ~b.prefix_mask
        pos = (b.rows[sel] * (w // 4) + b.cols[sel]).tolist()
        assert pos == sorted(set(pos)) and max(pos) < n  # distinct grid cells, in order
    # a resolution-dependent rate: drop more from bigger images
    rate = lambda grid: 0.75 if grid[0] * grid[1] >= 16 else 0.0  # noqa: E731
    b = pack_images(imgs, 4, max_seq_len=40, drop=rate, generator=g)
    for i, (h, w) in enumerate(SIZES):
        n = (h // 4) * (w // 4)
        assert int((b.image_ids == i).sum()) == 1 + (num_kept(n, 0.75) if n >= 16 else n)
    model = VisionTransformer(16, 4, 3, 32, 1, 4, pos_encoding="factorized").eval()
    assert torch.isfinite(model.forward_packed(b)).all()


def test_pool_modes_against_reference():
    torch.manual_seed(0)
    b = pack_images(_images(), 4, max_seq_len=48)
    tokens = torch.randn(*b.image_ids.shape, 8)
    mean = pool_packed(tokens, b, "mean")
    cls = pool_packed(tokens, b, "cls")
    pool = AttentionPool(8, 2)
    attn = pool_packed(tokens, b, "attn", pool)
    for i in range(b.num_images):
        sel = (b.image_ids == i) & ~b.prefix_mask
        torch.testing.assert_close(mean[i], tokens[sel].mean(0))
        torch.testing.assert_close(cls[i], tokens[(b.image_ids == i) & b.prefix_mask][0])
        torch.testing.assert_close(attn[i], pool(tokens[sel][None])[0, 0], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="unknown mode"):
        pool_packed(tokens, b, "max")


def test_pack_errors():
    with pytest.raises(ValueError, match="max_seq_len"):
        pack_images(_images(), 4, max_seq_len=10)
    with pytest.raises(ValueError, match="channels"):
        pack_images([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)], 4, 8)
    with pytest.raises(ValueError, match="multiple of the patch"):
        pack_images([torch.zeros(3, 5, 4)], 4, 8)
