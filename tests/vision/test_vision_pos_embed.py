"""2D position encodings: sin-cos, resampling, factorized tables, axial RoPE."""

import math

import pytest
import torch

from modalab.vision.pos_embed import (
    AxialRoPE2d,
    FactorizedPosEmbed,
    apply_rope,
    grid_positions,
    interpolate_grid,
    resample_pos_embed,
    rope_fn,
    sincos_2d,
    sincos_2d_at,
)


def test_grid_positions_row_major():
    r, c = grid_positions((2, 3))
    assert r.tolist() == [0, 0, 0, 1, 1, 1] and c.tolist() == [0, 1, 2, 0, 1, 2]


def test_sincos_values_against_formula():
    d, t = 16, 10000.0
    emb = sincos_2d((3, 5), d, t)
    assert emb.shape == (15, d) and emb.dtype == torch.float32
    row, col = 2, 4
    v = emb[row * 5 + col].double()
    for i in range(d // 4):
        w = t ** (-i / (d // 4))
        assert math.isclose(v[i], math.sin(row * w), abs_tol=1e-6)
        assert math.isclose(v[d // 4 + i], math.cos(row * w), abs_tol=1e-6)
        assert math.isclose(v[d // 2 + i], math.sin(col * w), abs_tol=1e-6)
        assert math.isclose(v[3 * d // 4 + i], math.cos(col * w), abs_tol=1e-6)


def test_sincos_properties():
    d = 32
    emb = sincos_2d((6, 7), d).double()
    assert torch.allclose(emb.norm(dim=-1) ** 2, torch.full((42,), d / 2, dtype=torch.float64), atol=1e-5)
    # dot products depend only on the 2D offset
    at = lambda r, c: sincos_2d_at(torch.tensor(r), torch.tensor(c), d).double()  # noqa: E731
    for (r1, c1), (r2, c2), (dr, dc) in [((0, 0), (2, 3), (4, 1)), ((5, 1), (1, 6), (-1, 7))]:
        a = at(r1, c1) @ at(r2, c2)
        b = at(r1 + dr, c1 + dc) @ at(r2 + dr, c2 + dc)
        assert abs(a - b) < 1e-5
    # rows and columns are distinguishable
    assert not torch.allclose(at(1, 2), at(2, 1))
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d((2, 2), 30)


def test_resample_same_grid_is_identity():
    torch.manual_seed(0)
    pe = torch.randn(1, 1 + 4 * 6, 8)
    assert resample_pos_embed(pe, (4, 6), (4, 6)) is pe
    # the interpolation itself is the identity at the same size
    x = torch.randn(1, 8, 4, 6)
    for mode in ("bicubic", "bilinear", "nearest"):
        torch.testing.assert_close(interpolate_grid(x, (4, 6), mode), x, rtol=0, atol=1e-6)


def test_resample_new_grid():
    torch.manual_seed(0)
    pe = torch.randn(1, 2 + 16, 8)
    out = resample_pos_embed(pe, (3, 7), num_prefix_tokens=2)
    assert out.shape == (1, 2 + 21, 8)
    assert torch.equal(out[:, :2], pe[:, :2])  # prefix untouched
    const = torch.cat([torch.zeros(1, 1, 8), torch.full((1, 16, 8), 0.5)], dim=1)
    for grid in [(2, 2), (8, 3), (7, 7)]:  # constant grids stay constant, shrinking or growing
        torch.testing.assert_close(resample_pos_embed(const, grid)[:, 1:], torch.full((1, grid[0] * grid[1], 8), 0.5))
    # low precision in, interpolation in float32, same dtype out
    bf = resample_pos_embed(pe.bfloat16(), (5, 5), num_prefix_tokens=2)
    ref = resample_pos_embed(pe.bfloat16().float(), (5, 5), num_prefix_tokens=2)
    assert bf.dtype == torch.bfloat16 and torch.allclose(bf.float(), ref, atol=1e-2)
    # gradients reach the table
    p = pe.clone().requires_grad_()
    resample_pos_embed(p, (6, 6), num_prefix_tokens=2).sum().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_resample_errors():
    with pytest.raises(ValueError, match="not a square"):
        resample_pos_embed(torch.zeros(1, 1 + 6, 4), (3, 3))
    with pytest.raises(ValueError, match="old_grid"):
        resample_pos_embed(torch.zeros(1, 1 + 6, 4), (3, 3), old_grid=(2, 2))


def test_factorized():
    torch.manual_seed(0)
    fe = FactorizedPosEmbed(5, 7, 8)
    r, c = torch.tensor([0, 4, 2]), torch.tensor([6, 0, 3])
    out = fe(r, c)
    torch.testing.assert_close(out, fe.row_embed[r] + fe.col_embed[c])
    out.sum().backward()
    assert fe.row_embed.grad[[0, 2, 4]].abs().sum() > 0 and fe.row_embed.grad[1].abs().sum() == 0
    with pytest.raises(ValueError, match="max_grid"):
        fe(torch.tensor([5]), torch.tensor([0]))


def _rope_reference(x, rows, cols, head_dim, theta):
    """Float64 loop: rotate each pair by an explicit 2x2 matrix."""
    q = head_dim // 4
    out = torch.empty_like(x, dtype=torch.float64)
    for n in range(x.shape[0]):
        for j in range(head_dim // 2):
            pos = rows[n] if j < q else cols[n]
            ang = float(pos) * theta ** (-(j % q) / q)
            rot = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]], dtype=torch.float64)
            out[n, 2 * j : 2 * j + 2] = rot @ x[n, 2 * j : 2 * j + 2].double()
    return out


def test_rope_matches_reference():
    torch.manual_seed(0)
    rope = AxialRoPE2d(16, theta=100.0)
    x = torch.randn(6, 16)
    rows, cols = torch.tensor([0, 1, 2, 5, 3, 0]), torch.tensor([0, 4, 1, 2, 7, 3])
    got = apply_rope(x, rope.angles(rows, cols))
    torch.testing.assert_close(got.double(), _rope_reference(x, rows, cols, 16, 100.0), rtol=0, atol=1e-5)
    # angle 0 is the identity; rotations keep norms
    assert torch.equal(apply_rope(x, torch.zeros(6, 8)), x)
    torch.testing.assert_close(got.norm(dim=-1), x.norm(dim=-1))


def test_rope_dot_depends_only_on_2d_offset():
    torch.manual_seed(1)
    rope = AxialRoPE2d(32).double()
    q, k = torch.randn(32, dtype=torch.float64), torch.randn(32, dtype=torch.float64)

    def dot(pq, pk):
        rows = torch.tensor([pq[0], pk[0]], dtype=torch.float64)
        cols = torch.tensor([pq[1], pk[1]], dtype=torch.float64)
        a = rope.angles(rows, cols)
        return float(apply_rope(q[None], a[:1])[0] @ apply_rope(k[None], a[1:])[0])

    for pq, pk in [((0, 0), (3, 5)), ((7, 2), (1, 1)), ((4, 9), (4, 0))]:
        base = dot(pq, pk)
        for shift in [(1, 0), (0, 3), (5, -2), (20, 30)]:
            moved = dot((pq[0] + shift[0], pq[1] + shift[1]), (pk[0] + shift[0], pk[1] + shift[1]))
            assert abs(base - moved) < 1e-10
    # but a different offset gives a different dot product, along each axis
    assert abs(dot((0, 0), (1, 0)) - dot((0, 0), (0, 1))) > 1e-3
    assert abs(dot((0, 0), (2, 0)) - dot((0, 0), (1, 0))) > 1e-3


def test_rope_fn_broadcasts_over_heads():
    torch.manual_seed(0)
    rope = AxialRoPE2d(8)
    q, k = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    ang = rope.angles(torch.arange(5).expand(2, 5), torch.zeros(2, 5))  # (B, N, Dh/2)
    rq, rk = rope_fn(ang)(q, k)
    torch.testing.assert_close(rq[1, 2], apply_rope(q[1, 2], ang[1]))
    torch.testing.assert_close(rk[0, 0], apply_rope(k[0, 0], ang[0]))
    # rows only turn the first half of the pairs
    assert torch.equal(rq[..., 4:], q[..., 4:])
    with pytest.raises(ValueError, match="divisible by 4"):
        AxialRoPE2d(6)
