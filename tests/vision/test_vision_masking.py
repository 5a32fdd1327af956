"""FLIP patch dropout: kept count, prefix tokens, order, eval identity."""

import pytest
import torch

from modalab.vision.masking import PatchDropout, keep_indices, num_kept


@pytest.mark.parametrize("n,r,k", [(16, 0.5, 8), (16, 0.75, 4), (10, 0.75, 2), (3, 0.9, 1), (1, 0.5, 1), (7, 0.0, 7)])
def test_num_kept(n, r, k):
    assert num_kept(n, r) == k == max(1, int(n * (1 - r)))


def _marked(b, n, d=4):
    """Tokens whose first feature is their index; the class token is -1."""
    x = torch.randn(b, 1 + n, d)
    x[:, :, 0] = torch.arange(-1, n).float()
    return x


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_patch_dropout_keeps_count_cls_and_order(ratio):
    g = torch.Generator().manual_seed(0)
    pd = PatchDropout(ratio).train()
    pd.generator = g
    x = _marked(5, 20)
    out = pd(x)
    k = num_kept(20, ratio)
    assert out.shape == (5, 1 + k, 4)
    assert torch.all(out[:, 0, 0] == -1)  # the class token always survives, first
    idx = out[:, 1:, 0].long()  # (B, K)
    assert torch.all(idx >= 0)  # no class token among the kept patches
    assert torch.all(idx[:, 1:] > idx[:, :-1])  # unique and in order
    torch.testing.assert_close(out[:, 1:], torch.gather(x, 1, (idx + 1)[..., None].expand(-1, -1, 4)))
    assert len({tuple(r) for r in idx.tolist()}) > 1  # different images drop different patches


def test_patch_dropout_aligned_and_gradients():
    pd = PatchDropout(0.5).train()
    pd.generator = torch.Generator().manual_seed(3)
    x = _marked(2, 8).requires_grad_()
    ang = torch.arange(9.0)[None, :, None].expand(1, 9, 3)  # shared over the batch: expanded
    out, a = pd(x, ang)
    assert a.shape == (2, 5, 3) and torch.equal(a[..., 0], out[..., 0].detach() + 1)
    out.sum().backward()
    assert int((x.grad[..., 0] != 0).sum()) == 2 * 5  # gradient only at kept tokens


def test_patch_dropout_off_in_eval_and_at_zero():
    x = _marked(2, 8)
    assert PatchDropout(0.75).eval()(x) is x
    assert PatchDropout(0.0).train()(x) is x
    out, a = PatchDropout(0.5).eval()(x, x[..., :1])
    assert out is x


def test_keep_indices_uniform():
    g = torch.Generator().manual_seed(0)
    idx = keep_indices(4000, 8, 0.5, g)  # (B, 4)
    freq = torch.bincount(idx.flatten(), minlength=8).float() / idx.numel()
    assert torch.allclose(freq, torch.full((8,), 1 / 8), atol=0.01)


def test_ratio_errors():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        PatchDropout(1.0)
