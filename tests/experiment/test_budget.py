"""The budget rule (baseline within 1 point of its val plateau), --budget converged, the sweep doctor."""

import json
import sys
from pathlib import Path

import pytest

from modalab.experiment.budget import BUDGET_FILE, baseline_arm, find_budget, plateau_check, run_curve
from modalab.experiment.doctor_sweep import diagnose_sweep
from modalab.experiment.sweep import Plan, expand_grid

sys.path.insert(0, str(Path(__file__).parent))
from test_exp_report import ROOT, fake_sweep  # noqa: E402


def test_plateau_check_on_hand_made_curves():
    flat = [(100, 0.80), (200, 0.93), (300, 0.945), (400, 0.95)]
    c = plateau_check([flat])
    assert c.converged and c.plateau == 0.95 and c.late == 0.945  # last point at or before 300
    rising = [(100, 0.5), (200, 0.7), (300, 0.8), (400, 0.9)]
    c = plateau_check([rising])
    assert c.converged is False and "still rising" in c.reason
    dipped = [(100, 0.5), (200, 0.95), (300, 0.96), (400, 0.93)]
    c = plateau_check([dipped])
    assert c.converged is False and "fell from its plateau" in c.reason
    # the mean over seeds, at the steps every run shares
    c = plateau_check([[(1, 0.0), (2, 0.5), (3, 1.0), (4, 1.0)], [(2, 0.7), (3, 0.8), (4, 0.8), (5, 0.9)]])
    assert c.steps == [2, 3, 4] and c.curve == pytest.approx([0.6, 0.9, 0.9])
    assert plateau_check([[(10, 0.5), (20, 0.6)]]).converged is None  # too few points
    assert "NOT converged" in plateau_check([rising], "base", "val_zeroshot_top1").line()


def test_run_curve_reads_metrics_and_the_final_val(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in [
        {"step": 10, "loss": 1.0}, {"step": 20, "val_zeroshot_top1": 0.4}, {"step": 40, "val_zeroshot_top1": 0.6}]))
    (tmp_path / "results.json").write_text(json.dumps({"val_zeroshot_top1": 0.7, "zeroshot_top1": 0.69}))
    (tmp_path / "config.yaml").write_text("train:\n  steps: 60\n")
    assert run_curve(tmp_path, "zeroshot_top1") == [(20, 0.4), (40, 0.6), (60, 0.7)]


def test_baseline_arm_is_the_recipes_own_setting():
    recipe = ROOT / "recipes" / "clip_digits.yaml"
    plan = Plan(Path("x"), recipe, {"train.batch_size": ["64", "128"]}, [0], [],
                expand_grid({"train.batch_size": ["64", "128"]}))
    assert baseline_arm(plan).name == "batch_size-128"  # the recipe trains at 128
    plan2 = Plan(Path("x"), recipe, {"train.batch_size": ["32", "64"]}, [0], [],
                 expand_grid({"train.batch_size": ["32", "64"]}))
    assert baseline_arm(plan2).name == "batch_size-32"  # none matches: the first arm


def test_find_budget_doubles_until_the_val_curve_is_flat(tmp_path):
    recipe = ROOT / "recipes" / "clip_digits.yaml"  # pilots start at the overridden 400 steps
    plan = Plan(tmp_path, recipe, {}, [3], ["train.batch_size=64", "train.steps=400"], expand_grid({}))
    calls = []

    def pilot(over, out):  # accuracy saturates at 1000 steps: 400 and 800 still rise, 1600 is flat
        calls.append(over)
        steps = int([o for o in over if o.startswith("train.steps=")][-1].split("=")[1])  # the last wins
        out.mkdir(parents=True)
        val = lambda s: min(1.0, s / 1000)  # noqa: E731
        (out / "metrics.jsonl").write_text("\n".join(
            json.dumps({"step": s, "val_zeroshot_top1": val(s)}) for s in range(steps // 10, steps, steps // 10)))
        (out / "results.json").write_text(json.dumps({"val_zeroshot_top1": val(steps)}))
        (out / "config.yaml").write_text(f"train:\n  steps: {steps}\n")
        return 0

    steps, pilots = find_budget(plan, pilot)
    assert steps == 1600 and [p["steps"] for p in pilots] == [400, 800, 1600]
    assert [p["converged"] for p in pilots] == [False, False, True]
    assert "run.seed=3" in calls[0] and "train.batch_size=64" in calls[0] and "train.eval_every=40" in calls[0]
    rec = json.loads((tmp_path / BUDGET_FILE).read_text())
    assert rec["steps"] == 1600 and rec["converged"] and rec["baseline_arm"] == "base"
    calls.clear()
    assert find_budget(plan, pilot)[0] == 1600 and not calls  # finished pilots are reused


def test_sweep_doctor_flags_unconverged_baseline_and_few_seeds(tmp_path):
    recipe = ROOT / "recipes/chapter5/temperature.yaml"
    bad = fake_sweep(tmp_path / "bad", recipe, "loss.temperature", ["0.01", "0.07"], [0.0, 0.05], converged=False)
    found = {(f.check, f.severity) for f in diagnose_sweep(bad)}
    assert ("budget", "error") in found and ("seeds", "error") in found
    good = fake_sweep(tmp_path / "good", recipe, "loss.temperature", ["0.01", "0.07"], [0.0, 0.05], seeds=range(6))
    assert [f for f in diagnose_sweep(good) if f.severity != "info"] == []
    at5 = fake_sweep(tmp_path / "five", recipe, "loss.temperature", ["0.01", "0.07"], [0.0, 0.05], seeds=range(5))
    (f,) = diagnose_sweep(at5)
    assert f.severity == "info" and "0.0625" in f.message


def test_doctor_command_on_a_sweep_exits_non_zero_on_errors(tmp_path, capsys):
    from modalab.cli import main

    bad = fake_sweep(tmp_path / "bad", ROOT / "recipes/chapter5/temperature.yaml", "loss.temperature",
                     ["0.01", "0.07"], [0.0, 0.05], converged=False)
    assert main(["doctor", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "[ERROR] budget" in out and "NOT converged" in out and "fewer than 5 paired seeds" in out


def test_sweep_report_shows_budget_and_provenance(tmp_path):
    from modalab.experiment.report import write_sweep_report

    root = fake_sweep(tmp_path / "sw", ROOT / "recipes/chapter5/temperature.yaml", "loss.temperature",
                      ["0.01", "0.07"], [0.0, 0.05], converged=False)
    html = write_sweep_report(root).read_text()
    assert "NOT converged at 100 steps" in html and "still rising" in html
    assert "6 run(s): c0ffee" in html and "box" in html
    assert "p sign-flip, exact" in html and "MDE" in html and "&lt;0.001" not in html


def test_lower_is_better_metrics_plateau_at_their_minimum_with_a_relative_tolerance():
    from modalab.experiment.budget import lower_is_better

    assert lower_is_better("val_fid") and lower_is_better("val_loss") and lower_is_better("cascade/wer")
    assert not lower_is_better("val_zeroshot_top1") and not lower_is_better("val_image_to_text_R@1")
    assert not lower_is_better("val_psnr") and not lower_is_better("val_tagging_mAP")
    falling = [(s, 10.0 - s / 20) for s in range(10, 110, 10)]  # FID 9.5 -> 5.0, still falling
    c = plateau_check([falling], "base", "val_fid")
    assert c.converged is False and "still falling" in c.reason and c.plateau == 5.0
    flat = [(s, 5.0 + (0.02 if s < 80 else 0.0)) for s in range(10, 110, 10)]  # within 1% of 5.0
    assert plateau_check([flat], "base", "val_fid").converged is True
    worse = [(s, 5.0 if s < 60 else 6.0) for s in range(10, 110, 10)]  # rose from its minimum
    c = plateau_check([worse], "base", "val_fid")
    assert c.converged is False and "fell from its plateau" in c.reason
    psnr = [(s, 29.0 + (0.1 if s >= 80 else 0.0)) for s in range(10, 110, 10)]  # +0.1 dB < 1% of 29 dB
    c = plateau_check([psnr], "base", "val_psnr")
    assert c.converged is True and c.tol == 0.01 * 29.1 and "(tolerance 0.291)" in c.line()  # the dB applied
    acc = [(s, 0.5) for s in range(10, 110, 10)]
    assert "(tolerance 0.01)" in plateau_check([acc], "b", "val_acc").line()


def test_the_gain_carries_its_standard_error_over_runs():
    a = [(100, 0.5), (200, 0.6), (300, 0.70), (400, 0.74)]  # gains over the last quarter: 0.04
    b = [(100, 0.5), (200, 0.6), (300, 0.72), (400, 0.74)]  # 0.02
    c = plateau_check([a, b], "base", "val_x")
    assert c.final - c.late == pytest.approx(0.03)
    assert c.gain_se == pytest.approx(0.01)  # stdev(0.04, 0.02) / sqrt(2)
    assert "+0.0300 ± 0.0100 (SE over runs)" in c.line()
    one = plateau_check([a], "base", "val_x")
    assert one.gain_se != one.gain_se and "SE over runs" not in one.line()  # one run: no SE
