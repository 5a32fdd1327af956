"""``optim.fused: true``: torch's fused AdamW, against the default foreach AdamW (the reference):
the same parameters within float rounding after 25 steps (not bit for bit, hence off by default),
and a clear error for an optimizer without a fused kernel here."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from modalab.config import load
from modalab.train.optim import build_optimizer, param_groups


def test_fused_adamw_follows_foreach_within_rounding():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 4))
    ref, start = copy.deepcopy(model), copy.deepcopy(model)
    fused = build_optimizer("adamw", param_groups(model, 1e-2, 0.05), fused=True)
    plain = build_optimizer("adamw", param_groups(ref, 1e-2, 0.05))
    assert fused.defaults["fused"] is True and plain.defaults["foreach"] is True
    for step in range(25):
        x = torch.randn(64, 16, generator=torch.Generator().manual_seed(step))
        for m, opt in ((model, fused), (ref, plain)):
            opt.zero_grad(set_to_none=True)
            m(x).square().mean().backward()
            opt.step()
    moved = max((q - p0).abs().max().item() for q, p0 in zip(ref.parameters(), start.parameters()))
    worst = max((p - q).abs().max().item() for p, q in zip(model.parameters(), ref.parameters()))
    assert moved > 1e-2  # 25 steps at lr 1e-2 moved the weights: the comparison is not vacuous
    assert worst < 1e-5, worst


RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml"


def test_fused_is_a_recipe_key_and_sgd_refuses_it():
    assert load(RECIPE, ["optim.fused=true"]).optim.fused is True and load(RECIPE).optim.fused is False
    with pytest.raises(ValueError, match="optim.fused=true is only implemented for adamw"):
        build_optimizer("sgd", param_groups(nn.Linear(2, 2), 1e-2, 0.0), fused=True)
