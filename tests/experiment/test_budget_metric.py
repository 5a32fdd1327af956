"""``modalab sweep --budget converged --metric val_KEY``: the pilots read the named validation curve."""

from pathlib import Path

import pytest

from modalab.experiment import budget as budget_mod
from modalab.experiment.commands import _budget_overrides, _sweep_args
from modalab.experiment.sweep import SweepError, parse_grid

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "chapter5" / "spec_augment.yaml"


def test_budget_pilots_read_the_metric_named_by_metric(tmp_path, monkeypatch):
    seen = {}

    def fake_find_budget(plan, run_pilot, metric="zeroshot_top1", max_doublings=4):
        seen["metric"] = metric
        return 400, [{"converged": True, "reason": "flat"}]

    monkeypatch.setattr(budget_mod, "find_budget", fake_find_budget)
    grid = parse_grid(["model.spec_augment=none,LB"])
    over = _budget_overrides("converged", tmp_path / "s", RECIPE, grid, [0], [], "val_tagging_mAP")
    assert seen["metric"] == "tagging_mAP" and over == ["train.steps=400", "train.eval_every=40"]
    _budget_overrides("converged", tmp_path / "s", RECIPE, grid, [0], [])
    assert seen["metric"] == "zeroshot_top1"  # the default stays the contrastive recipes' key
    with pytest.raises(SweepError, match="must name a val_ key, got 'tagging_mAP'"):
        _budget_overrides("converged", tmp_path / "s", RECIPE, grid, [0], [], "tagging_mAP")


def test_sweep_header_may_name_the_metric():
    head = _sweep_args(["--grid", "model.spec_augment=none,LB", "--budget", "converged", "--metric", "val_tagging_mAP"])
    assert head.metric == "val_tagging_mAP" and head.budget == "converged"
