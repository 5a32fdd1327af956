"""The tokenizer task with the LPIPS-style perceptual term and the reconstruction FID (issue 21):
both feature networks are trained on the training split only, the loss and the metric use
different networks, and ``reconstruction_fid`` agrees with the plain FID on the same features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from modalab import registry
from modalab.config import load
from modalab.eval.feature_net import FeatureNetConfig, cached_feature_net, feature_net_path
from modalab.eval.generation import fid, real_floor
from modalab.eval.reconstruction_fid import reconstruction_fid
from modalab.experiment.rundir import RunDir
from modalab.experiment.runner import run
from modalab.vision.lpips_features import FeatureLPIPS

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "chapter5" / "vqgan_terms.yaml"
TINY = ["train.steps=3", "train.batch_size=32", "run.progress=false", "train.num_threads=1",
        "model.channels=8", "model.latent_dim=8", "eval.samples=0", "loss.feature_net_steps=5",
        "eval.feature_net_steps=5", "loss.perceptual_weight=0.5"]


class _Identity(nn.Module):
    def forward(self, x):
        return x, None, {}


def test_reconstruction_fid_matches_plain_fid(tmp_path):
    g = torch.Generator().manual_seed(0)
    train, held = torch.rand(40, 1, 8, 8, generator=g), torch.rand(20, 1, 8, 8, generator=g)
    labels = torch.arange(40) % 4
    cfg = FeatureNetConfig(width=4, steps=5, batch_size=16)
    same = reconstruction_fid(_Identity(), held, train, labels, cfg, tmp_path, seed=3)
    assert abs(same["fid"]) < 1e-8 and same["lpips_feat"] == 0.0
    net = cached_feature_net(train, labels, cfg, tmp_path)
    assert same["fid_real_floor"] == pytest.approx(real_floor(net.embed(held), seed=3), rel=1e-12)
    blur = nn.Module()
    blur.forward = lambda x: (nn.functional.avg_pool2d(x, 3, 1, 1), None, {})
    got = reconstruction_fid(blur, held, train, labels, cfg, tmp_path, seed=3)
    recon = nn.functional.avg_pool2d(held, 3, 1, 1).clamp(0, 1)
    assert got["fid"] == pytest.approx(fid(net.embed(held), net.embed(recon)), rel=1e-9)
    assert got["lpips_feat"] == pytest.approx(float(FeatureLPIPS(net)(held, recon)), rel=1e-5)
    with pytest.raises(ValueError, match="same-size real comparison"):
        reconstruction_fid(_Identity(), train, held, labels[:20], cfg, tmp_path)


def test_task_trains_both_networks_on_the_training_split_only(tmp_path):
    recipe = load(RECIPE, TINY)
    task = registry.build("task", "tokenizer", recipe, RunDir.create(tmp_path / "r", "", "x"))
    assert isinstance(task.objective.perceptual, FeatureLPIPS)
    x, y = task.train_tensors()
    assert len(x) == len(task.data.train) and len(y) == len(x)
    loss_net = feature_net_path(x, y, FeatureNetConfig(steps=5, seed=1), task.cache_dir)
    assert loss_net.is_file() and len(list(task.cache_dir.iterdir())) == 1  # only the loss net so far
    # the net the loss holds is the one trained on exactly the training split
    assert torch.equal(task.objective.perceptual.net.body[0].weight,
                       cached_feature_net(x, y, FeatureNetConfig(steps=5, seed=1), task.cache_dir).body[0].weight)
    assert not any(p.requires_grad for p in task.objective.perceptual.parameters())
    assert "objective" in task.extra_modules()  # moved to the device with the model
    res = task.evaluate(final=False)
    fid_net = feature_net_path(x, y, FeatureNetConfig(steps=5, seed=0), task.cache_dir)
    assert fid_net.is_file() and fid_net != loss_net  # the metric's network is not the loss's
    assert res["fid"] >= -1e-9 and res["fid_real_floor"] > 0 and res["lpips_feat"] > 0


def test_recipe_runs_with_lpips_gan_and_fid(tmp_path):
    out = run(load(RECIPE, [*TINY, "loss.use_gan=true", "loss.disc_start=1", "train.log_every=1"]),
              tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    for k in ("fid", "fid_real_floor", "fid_real_train_same_n", "lpips_feat", "psnr", "ssim"):
        assert res[f"test_{k}"] == res[f"test_{k}"] and f"val_{k}" in res  # present, not NaN
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*(r.keys() for r in logs))
    assert {"perceptual", "g_loss", "d_weight"} <= keys, keys  # both terms were on


def test_structural_option_is_kept(tmp_path):
    recipe = load(RECIPE, [*TINY, "loss.perceptual=structural", "eval.fid=false"])
    task = registry.build("task", "tokenizer", recipe, RunDir.create(tmp_path / "r", "", "x"))
    assert type(task.objective.perceptual).__name__ == "StructuralLoss"
    assert not task.cache_dir.exists()  # no feature network needed


def test_training_a_feature_net_leaves_the_global_rng_alone():
    """A run that trains its FID network at the first evaluation must draw the same random numbers
    afterwards as one that does not (the network itself is the same either way)."""
    from modalab.eval.feature_net import train_feature_net

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 1, 8, 8, generator=g), torch.arange(32) % 4
    cfg = FeatureNetConfig(width=4, steps=2, batch_size=8, seed=5)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = train_feature_net(x, y, cfg)
    assert torch.equal(torch.rand(3), expected)
    b = train_feature_net(x, y, cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
