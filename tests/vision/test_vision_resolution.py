"""Resize policies: Qwen2-VL smart_resize, Pix2Struct grids and patches, fixed / multiple resizes."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from modalab.vision.resolution import (
    as_tensor,
    patchify,
    pix2struct_grid,
    pix2struct_patches,
    resize_fixed,
    resize_to_multiple,
    smart_resize,
    smart_resize_image,
)

# (height, width) -> expected (h, w) with factor 28, min 56*56, max 28*28*1280 (worked by hand)
SMART_TABLE = [
    ((224, 224), (224, 224)),  # exact multiple, in range: unchanged
    ((28, 28), (56, 56)),  # below min_pixels: beta = 2, ceil
    ((20, 30), (56, 84)),  # tiny: rounds to 28x28 < min, beta = sqrt(3136/600)
    ((10, 10), (56, 56)),  # tiny: rounds to 0 -> scaled up
    ((70, 70), (56, 56)),  # round(2.5) = 2 (Python's round half to even), area == min: kept
    ((1000, 1000), (980, 980)),  # rounds to 1008^2 > max: beta = sqrt(1e6/max), floor
    ((4000, 3000), (1148, 840)),  # huge
    ((30, 5000), (28, 5012)),  # extreme aspect (166.7), area in range
    ((1, 200), (28, 812)),  # aspect exactly 200 is allowed
]


@pytest.mark.parametrize("size,expected", SMART_TABLE)
def test_smart_resize_table(size, expected):
    assert smart_resize(*size) == expected


def test_smart_resize_other_factor():
    # patch 14 without merging: factor 14
    assert smart_resize(100, 150, factor=14, min_pixels=14 * 14, max_pixels=10**6) == (98, 154)


@pytest.mark.parametrize(
    "args",
    [(10, 2100), (2100, 10), (1, 201), (0, 10), (10, -1), (100, 100, 28, 5000, 4000), (100, 100, 0)],
)
def test_smart_resize_errors(args):
    with pytest.raises(ValueError):
        smart_resize(*args)


def test_smart_resize_aspect_error_message():
    with pytest.raises(ValueError, match="aspect ratio .* above 200"):
        smart_resize(5, 1200)


@settings(max_examples=200, deadline=None)
@given(st.integers(30, 6000), st.floats(0.1, 10.0))
def test_smart_resize_properties(h, aspect):
    w = max(1, round(h * aspect))
    rh, rw = smart_resize(h, w)
    assert rh % 28 == 0 and rw % 28 == 0 and rh >= 28 and rw >= 28
    assert 56 * 56 <= rh * rw <= 28 * 28 * 1280


def test_smart_resize_image_shape_and_pil():
    img = torch.rand(3, 100, 333)
    out = smart_resize_image(img)
    assert out.shape == (3, *smart_resize(100, 333))
    pil = Image.fromarray((np.random.default_rng(0).random((100, 333, 3)) * 255).astype(np.uint8))
    assert smart_resize_image(pil).shape == out.shape


PIX_TABLE = [
    ((512, 1024, 2048), (32, 64)),  # exact: scale = 1
    ((224, 224, 2048), (45, 45)),  # floor(sqrt(2048)) per side
    ((1, 1, 16), (4, 4)),  # tiny image, upscaled
    ((10, 10000, 64), (1, 64)),  # extreme aspect: rows clamp to 1, cols to max_patches
    ((4000, 3000, 2048), (52, 39)),  # huge
    ((100, 50, 1), (1, 1)),  # a single patch
]


@pytest.mark.parametrize("args,expected", PIX_TABLE)
def test_pix2struct_grid_table(args, expected):
    assert pix2struct_grid(*args) == expected


@pytest.mark.parametrize("args", [(0, 10, 16), (10, 10, 0), (10, 10, 16, 0)])
def test_pix2struct_grid_errors(args):
    with pytest.raises(ValueError):
        pix2struct_grid(*args)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(1, 4096))
def test_pix2struct_grid_fits(h, w, m):
    r, c = pix2struct_grid(h, w, m)
    assert 1 <= r <= m and 1 <= c <= m and r * c <= m


def _hf_style_patches(image, rows, cols, p):
    """Reference: Pix2Struct's extraction through F.unfold, (rows*cols, p*p*C)."""
    x = F.interpolate(image[None], size=(rows * p, cols * p), mode="bilinear", align_corners=False, antialias=True)
    u = F.unfold(x, (p, p), stride=(p, p))  # (1, C*p*p, L)
    c = image.shape[0]
    u = u.reshape(1, c, p, p, -1).permute(0, 4, 2, 3, 1)  # (1, L, p, p, C)
    return u.reshape(rows * cols, p * p * c)


def test_pix2struct_patches_layout():
    torch.manual_seed(0)
    img = torch.rand(3, 37, 90)
    out = pix2struct_patches(img, max_patches=64, patch=8)
    rows, cols = pix2struct_grid(37, 90, 64, 8)
    n = rows * cols
    assert out.grid == (rows, cols) and out.patches.shape == (64, 8 * 8 * 3)
    assert int(out.attention_mask.sum()) == n and bool(out.attention_mask[:n].all())
    torch.testing.assert_close(out.patches[:n], _hf_style_patches(img, rows, cols, 8), rtol=0, atol=1e-6)
    assert out.patches[n:].abs().sum() == 0 and out.row_ids[n:].sum() == 0 and out.col_ids[n:].sum() == 0
    assert out.row_ids[:n].min() == 1 and out.row_ids[:n].max() == rows
    assert out.col_ids[:n].min() == 1 and out.col_ids[:n].max() == cols
    assert out.row_ids[cols].item() == 2 and out.col_ids[cols].item() == 1  # row-major
    flat = out.flat()
    assert flat.shape == (64, 2 + 192) and torch.equal(flat[:, 0].long(), out.row_ids)


def test_patchify_reference():
    img = torch.arange(2 * 8 * 12, dtype=torch.float32).reshape(2, 8, 12)
    flat, grid = patchify(img, 4)
    assert grid == (2, 3)
    # patch (1, 2): rows 4..7, cols 8..11, flattened (p, p, C)
    expect = img[:, 4:8, 8:12].permute(1, 2, 0).reshape(-1)
    assert torch.equal(flat[1 * 3 + 2], expect)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patchify(torch.zeros(1, 5, 8), 4)


def test_resize_fixed_modes():
    img = torch.ones(1, 20, 40)
    for mode in ("stretch", "crop", "pad"):
        assert resize_fixed(img, 16, mode).shape == (1, 16, 16)
    padded = resize_fixed(img, (16, 16), "pad", fill=-1.0)
    # 20x40 fits as 8x16, centred: rows 4..11 are the image, the rest is fill
    assert (torch.allclose(padded[:, 4:12], torch.ones(1, 8, 16)) and torch.all(padded[:, :4] == -1)
            and torch.all(padded[:, 12:] == -1))
    grad = torch.arange(40, dtype=torch.float32).expand(1, 20, 40)
    crop = resize_fixed(grad, 20, "crop")  # no scaling needed: centre 20 columns = 10..29
    assert torch.equal(crop, grad[:, :, 10:30])
    with pytest.raises(ValueError, match="unknown mode"):
        resize_fixed(img, 16, "zoom")


def test_resize_to_multiple():
    img = torch.rand(3, 30, 61)
    out, (h, w) = resize_to_multiple(img, 14)
    assert out.shape == (3, 42, 70) and (h, w) == (30, 61)
    assert torch.equal(out[:, :30, :61], img) and out[:, 30:].abs().sum() == 0
    out, (h, w) = resize_to_multiple(img, 14, max_side=28)
    assert max(h, w) == 28 and out.shape[-2] % 14 == 0 and out.shape[-1] % 14 == 0
    assert math.isclose(w / h, 61 / 30, rel_tol=0.1)


def test_as_tensor_pil_grey_and_errors():
    pil = Image.fromarray(np.full((5, 7), 255, dtype=np.uint8))
    t = as_tensor(pil)
    assert t.shape == (1, 5, 7) and torch.allclose(t, torch.ones(1, 5, 7))
    with pytest.raises(TypeError):
        as_tensor(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError):
        as_tensor(torch.zeros(4, 4))
