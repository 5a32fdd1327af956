"""The SigLIP recipe starts from the paper's initialisation (Zhai et al. 2023: logit scale
exp(t') with t' = ln 10, bias -10) and its loss at that initialisation has the paper's value."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from modalab import registry
from modalab.align.losses import siglip
from modalab.config import load

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "clip_digits_siglip.yaml"
SMALL = ["model.vision.width=16", "model.vision.depth=1", "model.text.width=16", "model.text.depth=1"]


def test_recipe_builds_the_papers_initialisation(tmp_path):
    from modalab.experiment.rundir import RunDir

    recipe = load(RECIPE, SMALL)
    assert recipe.loss.name == "siglip"
    task = registry.build("task", "contrastive", recipe, RunDir.create(tmp_path / "r", "runs", "s"))
    model = task.model
    assert math.isclose(model.logit_scale.item(), math.log(10.0), rel_tol=1e-6)  # t' = ln 10
    assert math.isclose(task.logit_scale().item(), 10.0, rel_tol=1e-6)
    assert model.logit_bias is not None and model.logit_bias.item() == -10.0
    assert model.logit_scale.requires_grad and model.logit_bias.requires_grad


def test_loss_at_initialisation_matches_closed_form():
    """With orthogonal unit embeddings every logit is the bias: B positives pay softplus(10), the
    B (B - 1) negatives softplus(-10) each; the sum is divided by B (the paper's Algorithm 1)."""
    b = 8
    emb = torch.eye(2 * b, dtype=torch.float64)
    img, txt = emb[:b], emb[b:]  # (B, 2B) each: every image orthogonal to every text
    got = siglip(img, txt, torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64))
    want = (b * F.softplus(torch.tensor(10.0)) + b * (b - 1) * F.softplus(torch.tensor(-10.0))) / b
    assert abs(got.item() - want.item()) < 1e-6
