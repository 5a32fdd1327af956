"""Linked grid keys (several keys that move together on one sweep axis) and ``modalab sweep --dry-run``."""

import json
from pathlib import Path

import pytest

from modalab.experiment.budget import baseline_arm
from modalab.experiment.sweep import SweepError, expand_grid, make_plan, parse_grid
from modalab.experiment.sweep_grid import key_values

ROOT = Path(__file__).resolve().parents[2]
BATCH = ROOT / "recipes" / "chapter5" / "batch_size.yaml"


def test_linked_keys_make_one_arm_per_value_not_a_product():
    grid = parse_grid(["train.batch_size, train.steps=[128,500],[64, 500],[64,1000]"])
    assert grid == {"train.batch_size,train.steps": ["[128,500]", "[64, 500]", "[64,1000]"]}
    arms = expand_grid(grid)
    assert [a.overrides for a in arms] == [("train.batch_size=128", "train.steps=500"),
                                           ("train.batch_size=64", "train.steps=500"),
                                           ("train.batch_size=64", "train.steps=1000")]
    assert [a.name for a in arms] == ["batch_size-128__steps-500", "batch_size-64__steps-500",
                                      "batch_size-64__steps-1000"]
    assert arms[2].params == {"train.batch_size": "64", "train.steps": "1000"}  # per key, as typed
    assert key_values(arms) == {"train.batch_size": ["128", "64"], "train.steps": ["500", "1000"]}


def test_a_linked_axis_combines_with_other_axes_and_keeps_bracketed_values():
    arms = expand_grid(parse_grid(["optim.lr=1e-3,2e-3",
                                   "train.stages,train.steps=[[], 10],[[{steps: 5}, {steps: 5}], 10]"]))
    assert len(arms) == 4  # 2 learning rates x 2 linked values
    assert arms[1].overrides == ("optim.lr=1e-3", "train.stages=[{steps: 5}, {steps: 5}]", "train.steps=10")
    assert arms[0].params == {"optim.lr": "1e-3", "train.stages": "[]", "train.steps": "10"}


@pytest.mark.parametrize("spec, match", [
    ("train.batch_size,train.steps=[128,500],[64]", r"one value per linked key \(train.batch_size, train.steps\)"),
    ("train.batch_size,train.steps=128,64", "in brackets"),
    ("train.batch_size,train.steps=[],[64,1]", "in brackets"),
    ("train.batch_size,=[1,2]", "expected key.sub=v1,v2"),
    ("train.steps,train.steps=[1,2]", "given twice"),
])
def test_bad_linked_specs_say_what_is_expected(spec, match):
    with pytest.raises(SweepError, match=match):
        parse_grid([spec])


def test_a_key_in_two_axes_is_an_error():
    with pytest.raises(SweepError, match="given twice"):
        parse_grid(["train.steps=100,200", "train.batch_size,train.steps=[64,100],[128,200]"])


def test_batch_size_recipe_runs_equal_steps_and_equal_samples_from_one_baseline(tmp_path):
    """recipes/chapter5/batch_size.yaml: batch 128 x 500 steps (the baseline, first), 64 x 500 (equal
    steps) and 64 x 1000 (equal samples seen), every other setting shared."""
    from modalab.config import load
    from modalab.experiment.sweep import header_args

    args = header_args(BATCH)
    grid = parse_grid([args[i + 1] for i, a in enumerate(args) if a == "--grid"])
    assert args[args.index("--seeds") + 1] == "7"  # 3 comparisons under Holm: the sign-flip test needs n >= 7
    plan = make_plan(tmp_path / "sw", BATCH, grid, list(range(7)), [])
    recipes = [load(BATCH, list(a.overrides)) for a in plan.arms]
    assert [(r.train.batch_size, r.train.steps) for r in recipes] == [(128, 500), (64, 500), (64, 1000)]
    assert [r.train.batch_size * r.train.steps for r in recipes] == [64000, 32000, 64000]
    assert baseline_arm(plan) == plan.arms[0]
    base = load(BATCH)
    assert base.train.num_threads == 1 and base.train.eval_every == 50
    assert base.model.text.trim_padding is False and base.optim.fused is False
    dumped = [r.model_dump() for r in recipes]
    for d in dumped:
        d["train"].pop("batch_size"), d["train"].pop("steps")
    assert dumped[0] == dumped[1] == dumped[2]  # nothing else differs between the arms


def test_dry_run_lists_the_arms_and_runs_nothing(tmp_path, capsys):
    from modalab.cli import main

    out = tmp_path / "sw"
    assert main(["sweep", str(BATCH), "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 arm(s) x 7 seed(s) = 21 runs" in text
    assert "batch_size-64__steps-1000: train.batch_size=64 train.steps=1000 -> 1000 steps, batch 64" in text
    assert not out.exists()
    # a bad key in a linked axis fails before anything runs, naming the key
    assert main(["sweep", str(BATCH), "--dry-run", "--grid", "train.batch_sise,train.steps=[64,10]"]) != 0
    assert "unknown key 'train.batch_sise'" in capsys.readouterr().err


def test_sweep_report_plots_each_linked_key(tmp_path):
    from modalab.experiment.report import write_sweep_report
    from tests.experiment.test_exp_report import fake_sweep

    root = fake_sweep(tmp_path / "sw", BATCH, "train.batch_size", ["64", "128"], [0.0, 0.02])
    plan = json.loads((root / "sweep.json").read_text())
    plan["grid"] = {"train.batch_size,train.steps": ["[64,100]", "[128,100]"]}
    for a in plan["arms"]:
        a["params"] = {**a["params"], "train.steps": "100"}
    (root / "sweep.json").write_text(json.dumps(plan))
    html = write_sweep_report(root).read_text()
    # metric vs batch_size, vs steps, loss curves, tau curves, similarity histograms
    assert html.count("data:image/png;base64,") == 5
