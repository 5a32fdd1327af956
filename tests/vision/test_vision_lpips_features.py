"""The LPIPS-style distance over the in-house feature network (vision/lpips_features.py): zero on
identical images, symmetric, value and gradient against a plain float64 reference, the checkpoint
loader's errors, and its use as the VQGAN perceptual term."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from modalab.eval.feature_net import (FeatureCNN, FeatureNetConfig, cached_feature_net,
                                      feature_net_path)
from modalab.vision.lpips_features import FeatureLPIPS, load_feature_lpips, load_feature_net
from modalab.vision.tokenizer_builders import VQGANLossConfig, build_vqgan_loss
from modalab.vision.vqgan import StructuralLoss


def _net(seed: int = 0, channels: int = 1, width: int = 4) -> FeatureCNN:
    torch.manual_seed(seed)
    net = FeatureCNN(channels, 10, width)
    for p in net.parameters():  # non-trivial biases so that no ReLU map is all zero
        nn.init.normal_(p, 0.0, 0.5)
    return net


def _reference(net: FeatureCNN, x: torch.Tensor, y: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Plain float64 LPIPS (uniform channel weights) with explicit per-position loops over layers."""
    convs = [m for m in net.body if isinstance(m, nn.Conv2d)]
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    hx, hy = x.double() * 2 - 1, y.double() * 2 - 1
    for w, conv in zip(weights, convs):
        wt, b = conv.weight.double(), conv.bias.double()
        hx = torch.relu(torch.nn.functional.conv2d(hx, wt, b, conv.stride, conv.padding))
        hy = torch.relu(torch.nn.functional.conv2d(hy, wt, b, conv.stride, conv.padding))
        for i in range(x.shape[0]):
            acc = torch.zeros((), dtype=torch.float64)
            for r in range(hx.shape[2]):
                for c in range(hx.shape[3]):
                    a, bb = hx[i, :, r, c], hy[i, :, r, c]
                    a, bb = a / (a.norm() + 1e-10), bb / (bb.norm() + 1e-10)
                    acc = acc + ((a - bb) ** 2).sum()
            total[i] = total[i] + w * acc / (hx.shape[2] * hx.shape[3])
    return total


def test_zero_for_identical_and_symmetric():
    lp = FeatureLPIPS(_net(), reduction="none")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 1, 8, 8, generator=g), torch.rand(3, 1, 8, 8, generator=g)
    assert torch.equal(lp(x, x), torch.zeros(3))
    assert torch.allclose(lp(x, y), lp(y, x), atol=0, rtol=1e-6)
    assert (lp(x, y) > 0).all()
    assert (lp(x, y) <= 4 * lp.num_layers + 1e-5).all()  # unit vectors differ by at most 2


def test_value_and_gradient_match_float64_reference():
    net = _net(1)
    weights = [1.0, 0.5, 2.0, 0.25]
    lp = FeatureLPIPS(net, layer_weights=weights, reduction="none").double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    got = lp(x, y)
    ref = _reference(net, x, y, weights)
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-12)
    (g_got,) = torch.autograd.grad(got.sum(), x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    assert torch.allclose(g_got, g_ref, rtol=1e-8, atol=1e-12)
    assert g_got.abs().sum() > 0
    # the float32 fast path agrees with the reference too
    lp32 = FeatureLPIPS(_net(1), layer_weights=weights, reduction="none")
    assert torch.allclose(lp32(x.detach().float(), y.float()).double(), ref.detach(), rtol=1e-4, atol=1e-6)


def test_network_is_frozen_and_stays_in_eval_mode():
    lp = FeatureLPIPS(_net())
    lp.train()
    assert not lp.net.training
    assert all(not p.requires_grad for p in lp.parameters())
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    lp(x, torch.rand(2, 1, 8, 8)).backward()
    assert x.grad is not None and all(p.grad is None for p in lp.parameters())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="4 non-negative numbers"):
        FeatureLPIPS(_net(), layer_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        FeatureLPIPS(_net())(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="differ in shape"):
        FeatureLPIPS(_net())(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 4, 4))


def _train_data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(64, 1, 8, 8, generator=g), torch.arange(64) % 4


def test_checkpoint_round_trip(tmp_path):
    x, y = _train_data()
    cfg = FeatureNetConfig(width=4, steps=3, batch_size=16)
    net = cached_feature_net(x, y, cfg, tmp_path)
    path = feature_net_path(x, y, cfg, tmp_path)
    loaded = load_feature_net(path, channels=1)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    a, b = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    assert torch.equal(load_feature_lpips(path)(a, b), FeatureLPIPS(net)(a, b))


def test_checkpoint_missing_or_mismatched_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors not found.*training split"):
        load_feature_net(tmp_path / "nope.safetensors")
    x, y = _train_data()
    cfg = FeatureNetConfig(width=4, steps=3, batch_size=16)
    cached_feature_net(x, y, cfg, tmp_path)
    path = feature_net_path(x, y, cfg, tmp_path)
    with pytest.raises(ValueError, match="trained on 1-channel images.*3 channels"):
        load_feature_net(path, channels=3)
    # weights of a wider network under the metadata of a narrow one
    wide = {k: v.contiguous() for k, v in FeatureCNN(1, 4, 8).state_dict().items()}
    bad = tmp_path / "bad.safetensors"
    save_file(wide, str(bad), metadata={"config": json.dumps({"width": 4}), "channels": "1", "classes": "4"})
    with pytest.raises(ValueError, match=r"bad.safetensors does not match.*body.0.weight' has shape \(8, 1, 3, 3\)"):
        load_feature_net(bad)
    save_file(wide, str(bad))
    with pytest.raises(ValueError, match="metadata lacks"):
        load_feature_net(bad)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors: not a readable safetensors file"):
        load_feature_net(tmp_path / "junk.safetensors")


def test_vqgan_loss_takes_the_perceptual_option():
    cfg = VQGANLossConfig(name="vqgan", perceptual_weight=0.5, perceptual="structural")
    assert isinstance(build_vqgan_loss(cfg).perceptual, StructuralLoss)
    cfg = VQGANLossConfig(name="vqgan", perceptual_weight=0.5, perceptual="lpips_features")
    with pytest.raises(ValueError, match="lpips_features needs a feature network"):
        build_vqgan_loss(cfg)
    lp = FeatureLPIPS(_net())
    loss = build_vqgan_loss(cfg, perceptual=lp)
    assert loss.perceptual is lp
    x = torch.rand(2, 1, 8, 8)
    recon = torch.rand(2, 1, 8, 8, requires_grad=True)
    last = torch.zeros(1, requires_grad=True)
    total, logs = loss.generator_loss(x, recon, torch.zeros(()), 0, last)
    assert logs["perceptual"] == pytest.approx(float(lp(recon.detach(), x)), rel=1e-6)
    assert logs["total"] == pytest.approx(logs["rec"] + 0.5 * logs["perceptual"], rel=1e-6)
    # weight 0: no perceptual module at all, whatever the option
    assert build_vqgan_loss(VQGANLossConfig(name="vqgan", perceptual="lpips_features")).perceptual is None
