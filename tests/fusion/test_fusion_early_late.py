"""Early and late fusion: shapes, padding invariance, modality embeddings, fusers."""

import torch
from torch import nn

from modalab.fusion.early_late import ConcatFuse, ScoreFuse, early_fusion, late_fusion, masked_mean


def _inputs(seed=0):
    torch.manual_seed(seed)
    tokens = {"image": torch.randn(2, 5, 16, dtype=torch.float64), "text": torch.randn(2, 4, 16, dtype=torch.float64)}
    masks = {"image": torch.ones(2, 5, dtype=torch.bool), "text": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]).bool()}
    return tokens, masks


def test_masked_mean_reference():
    x = torch.arange(12, dtype=torch.float64).reshape(1, 4, 3)
    m = torch.tensor([[True, False, True, False]])
    torch.testing.assert_close(masked_mean(x, m), (x[:, 0] + x[:, 2]) / 2)


def test_early_fusion_padding_never_affects_outputs():
    for pool in ("cls", "mean"):
        torch.manual_seed(0)
        model = early_fusion(16, ["image", "text"], depth=2, heads=2, pool=pool).double()
        tokens, masks = _inputs()
        out = model(tokens, masks)
        assert out.shape == (2, 16)
        noisy = dict(tokens, text=tokens["text"].clone())
        noisy["text"][0, 2:] = 1e3
        torch.testing.assert_close(model(noisy, masks), out, rtol=0, atol=0)
        short = model({"image": tokens["image"][:1], "text": tokens["text"][:1, :2]})
        torch.testing.assert_close(short, out[:1], rtol=1e-10, atol=1e-12)


def test_early_fusion_mixes_modalities_and_uses_modality_embeddings():
    torch.manual_seed(1)
    model = early_fusion(16, ["a", "b"], depth=1, heads=2).double()
    x = torch.randn(1, 3, 16, dtype=torch.float64)
    # same tokens under swapped modality names give different outputs
    assert not torch.allclose(model({"a": x, "b": x * 0.5}), model({"a": x * 0.5, "b": x}))


def test_late_fusion_encoders_are_separate():
    torch.manual_seed(2)
    fuse = ConcatFuse(["image", "text"], dim=16, out_dim=3, interactions=True).double()
    model = late_fusion(16, ["image", "text"], depth=1, heads=2, fuse=fuse).double()
    tokens, masks = _inputs()
    out = model(tokens, masks)
    assert out.shape == (2, 3)
    pooled = model.embed(tokens, masks)
    # the image embedding depends on image tokens only
    other = dict(tokens, text=torch.randn(2, 4, 16, dtype=torch.float64))
    torch.testing.assert_close(model.embed(other, masks)["image"], pooled["image"], rtol=0, atol=0)
    noisy = dict(tokens, text=tokens["text"].clone())
    noisy["text"][0, 2:] = 1e3
    torch.testing.assert_close(model(noisy, masks), out, rtol=0, atol=0)


def test_score_fuse_is_equal_average_at_init():
    torch.manual_seed(3)
    heads = {"a": nn.Linear(4, 2), "b": nn.Linear(4, 2)}
    fuse = ScoreFuse(heads)
    pooled = {"a": torch.randn(3, 4), "b": torch.randn(3, 4)}
    torch.testing.assert_close(fuse(pooled), (heads["a"](pooled["a"]) + heads["b"](pooled["b"])) / 2)
