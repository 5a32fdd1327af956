"""docs/chapter5.md beside the table: verdict words, the val-curve panel, old rows kept."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from modalab.experiment.chapter5 import CLAIMED, verdict
from modalab.experiment.chapter5_sections import (
    OLD_HEADING, SHORT_HEAD, curve_panel, kept_old_claims, old_section, short_section,
)
from modalab.experiment.stats import compare_values

sys.path.insert(0, str(Path(__file__).parent))
from test_exp_report import ROOT, fake_sweep  # noqa: E402

TAU = "loss.temperature"


def _comp(effects: dict[str, float], noise: float, n: int = 7):
    """Three temperature arms at n seeds: arm value = 0.9 + effect + seeded noise per (arm, seed)."""
    rng = np.random.default_rng(1)
    values = {f"temperature-{t}": {s: 0.9 + e + rng.normal(0, noise) for s in range(n)} for t, e in effects.items()}
    params = {f"temperature-{t}": {TAU: t} for t in effects}
    return compare_values(values, "zeroshot_top1", params, n_boot=200)


def test_verdict_held_not_held_and_inconclusive_with_mde():
    rule = CLAIMED["temperature"]  # claimed: tau in [0.01, 0.1]
    held = verdict(_comp({"0.01": 0.0, "0.07": 0.02, "0.3": -0.10}, 0.002), rule)
    assert held.startswith("**held** (temperature-0.07 best")
    lost = verdict(_comp({"0.01": 0.0, "0.07": 0.0, "0.3": 0.10}, 0.002), rule)
    assert lost.startswith("**not held here**: temperature-0.3 beats temperature-0.0") and "significant)" in lost
    assert "Holm p_t" in lost and re.search(r"\((9\.[89]|10\.[01]) points, n=7", lost)
    # a 0.2-point edge in 3-point noise: not significant either way, and the MDE says what was detectable
    c = _comp({"0.01": 0.0, "0.07": 0.002, "0.3": 0.0}, 0.03)
    weak = verdict(c, rule)
    assert weak.startswith("**inconclusive**") and "not significant" in weak and "MDE at 80% power" in weak
    d = next(d for d in c.diffs if {d.a, d.b} == {"temperature-0.07", "temperature-0.3"}
             or {d.a, d.b} == {"temperature-0.01", "temperature-0.3"})
    assert not d.significant and d.mde > 0.03  # the design cannot see a 3-point effect in this noise


def test_curve_panel_shows_every_arms_mean_val_curve_and_the_rule(tmp_path):
    root = fake_sweep(tmp_path / "temperature", ROOT / "recipes/chapter5/temperature.yaml", TAU,
                      ["0.01", "0.07", "0.3"], [0.05, 0.1, -0.2], seeds=range(2))
    text = curve_panel(root)
    assert "converged at 100 steps" in text and "baseline arm temperature-0.07" in text
    assert "| step | temperature-0.01 | temperature-0.07 (baseline) | temperature-0.3 |" in text
    # fake runs: val 0.6 + e - 0.3 before step 40, 0.6 + e after, and 0.6 + e at the end (step 100)
    assert "  | 20 | 0.350 | 0.400 | 0.100 |" in text and "  | 100 | 0.650 | 0.700 | 0.400 |" in text
    assert "runs per arm: temperature-0.01: 2, temperature-0.07: 2, temperature-0.3: 2" in text
    slow = fake_sweep(tmp_path / "slow", ROOT / "recipes/chapter5/temperature.yaml", TAU,
                      ["0.01", "0.07"], [0.0, 0.0], converged=False)
    assert "NOT converged" in curve_panel(slow) and "still rising" in curve_panel(slow)


OLD = """# Chapter 5 claims

## The old table (2026-11-29; does not meet the protocol)

| claim | setting | measured | held? | report |
|---|---|---|---|---|
| (chapter 5.1.3) tau | grid | 0.5 | no | [temperature](chapter5/temperature.html) |
| (chapter 5.1.4) mix | grid | 0.4 | no | [negative_mix](chapter5/negative_mix.html) |

## Pairwise differences

- `recipes/chapter5/temperature.yaml` (runs/chapter5/temperature):
  - temperature-0.07 − temperature-0.01: +0.1148
- `recipes/chapter5/negative_mix.yaml` (runs/chapter5/negative_mix):
  - hard_fraction-0.2 − hard_fraction-0.0: -0.1400
  - hard_fraction-1.0 − hard_fraction-0.0: -0.3452

Each sweep: ...
"""


def test_kept_old_claims_keeps_only_claims_not_regenerated():
    rows, bullets = kept_old_claims(OLD, {"temperature"})
    assert rows == ["| (chapter 5.1.4) mix | grid | 0.4 | no | [negative_mix](chapter5/negative_mix.html) |"]
    assert bullets == ["- `recipes/chapter5/negative_mix.yaml` (runs/chapter5/negative_mix):",
                       "  - hard_fraction-0.2 − hard_fraction-0.0: -0.1400",
                       "  - hard_fraction-1.0 − hard_fraction-0.0: -0.3452"]
    section = old_section(rows, bullets, "no CPU time left.")
    assert section.startswith(OLD_HEADING) and "**not regenerated**: no CPU time left." in section
    # a document generated from that section keeps the row again (idempotent), and drops it once rerun
    assert kept_old_claims("# x\n\n" + section, {"temperature"})[0] == rows
    assert kept_old_claims("# x\n\n" + section, {"temperature", "negative_mix"}) == ([], [])
    assert old_section([], [], "x") == ""


def test_rows_short_of_the_protocol_read_as_descriptions_not_verdicts():
    rows = ["| c1 | s | 0.9 | **held** (A best, every difference significant) | 3 seeds | r |",
            "| c2 | s | 0.8 | **not held here**: B beats A (+2.0 points, significant) | not converged | r |",
            "| c3 | s | 0.7 | **inconclusive**: held in direction | not converged | r |"]
    section = short_section(rows)
    assert "**" not in section.split(SHORT_HEAD)[1]  # no bold verdict word survives
    assert "| description, reads as held at this budget (A best" in section
    assert "| description, reads as not held at this budget: B beats A" in section
    assert "| description, inconclusive at this budget: held in direction" in section
    assert "not a verdict" in SHORT_HEAD and short_section([]) == ""


def test_kept_old_claims_refuses_to_drop_a_regenerated_row():
    new = ("## Claims\n\n| (chapter 5.1.3) tau | grid | 0.9 | **held** | meets | "
           "[temperature](chapter5/temperature.html) |\n")
    with pytest.raises(ValueError, match="regenerated row for the sweep 'temperature'"):
        kept_old_claims(new, {"negative_mix"})
    assert kept_old_claims(new, {"temperature"}) == ([], [])


def test_doctor_says_when_holm_keeps_the_sign_flip_test_from_significance(tmp_path):
    from modalab.experiment.doctor_sweep import diagnose_sweep

    recipe = ROOT / "recipes/chapter5/temperature.yaml"
    three = fake_sweep(tmp_path / "three", recipe, TAU, ["0.01", "0.07", "0.3"], [0.0, 0.05, 0.1], seeds=range(6))
    (f,) = diagnose_sweep(three)  # 3 comparisons x 2/2^6 = 0.094: no sign-flip p can pass
    assert f.severity == "info" and "0.0938 after Holm over 3 comparisons" in f.message and "use >= 7" in f.fix
    seven = fake_sweep(tmp_path / "seven", recipe, TAU, ["0.01", "0.07", "0.3"], [0.0, 0.05, 0.1], seeds=range(7))
    assert diagnose_sweep(seven) == []  # 3 x 2/128 = 0.047 < 0.05


def test_scene_negative_claims_pick_the_hard_negative_and_curriculum_arms():
    """The claimed arms of negclip_scenes and levels_scenes, with params as their sweeps record them
    (the grid values as written in the recipes' `# sweep:` lines)."""
    negclip = CLAIMED["negclip_scenes"]
    assert negclip({"data.negative_levels": "[L1, L2, L3, swap]",
                    "loss": "{name: info_nce_text_negatives, schedule: all}"})
    assert not negclip({"data.negative_levels": "[]", "loss": "{name: info_nce}"})
    levels = CLAIMED["levels_scenes"]
    assert levels({"loss.schedule": "curriculum"}) and not levels({"loss.schedule": "all"})
    for stem in ("negclip_scenes", "levels_scenes"):  # each rule belongs to a recipe that exists
        assert (ROOT / "recipes/chapter5" / f"{stem}.yaml").exists()
