"""Sweep reports (plots, compare table, configs), the chapter-5 table generator, and a Chromium render."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modalab.experiment.chapter5 import claim_text, generate
from modalab.experiment.report import write_sweep_report
from modalab.experiment.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]


def claim_rows(text: str) -> list[str]:
    """The claim rows of a generated docs/chapter5.md, verdicts first, in both of its tables."""
    return [line for line in text.splitlines() if line.startswith("| (")]


def fake_sweep(root: Path, recipe: Path, key: str, values: list[str], effect: list[float], seeds=(0, 1, 2),
               seconds: list[float] | None = None, extra: list[dict] | None = None, converged: bool = True):
    """A finished sweep directory whose arms differ by ``effect`` in zeroshot_top1; each run logs a
    validation curve that has (``converged``) or has not flattened by its last step."""
    rng = np.random.default_rng(0)
    arms = [{"name": f"{key.split('.')[-1]}-{v}", "overrides": [f"{key}={v}"], "params": {key: v}} for v in values]
    root.mkdir(parents=True)
    (root / "sweep.json").write_text(json.dumps({
        "recipe": str(recipe), "grid": {key: values}, "seeds": list(seeds), "overrides": [], "arms": arms,
        "runs": [{"arm": a["name"], "seed": s, "dir": f"{a['name']}/seed{s}"} for a in arms for s in seeds]}))
    (root / "recipe.yaml").write_text("train:\n  steps: 100\n  batch_size: 128\n")
    for i, (a, e) in enumerate(zip(arms, effect)):
        for s in seeds:
            rd = RunDir.create(root / a["name"] / f"seed{s}", "", "x")
            rd.write_run_info({"name": "x", "seed": s, "status": "finished", "git_commit": "c0ffee",
                               "recipe_hash": f"h{i}{s}", "machine": {"host": "box", "threads": 1}})
            rd.write_config("train:\n  steps: 100\n")
            for step in range(10, 110, 10):
                rd.log({"step": step, "loss": 4 - step / 50 - e, "tau": 0.07})
                if step % 20 == 0 and step < 100:
                    rd.log({"step": step, "val_zeroshot_top1": (0.6 + e - (0.3 if step < 40 else 0.0)) if converged
                            else 0.2 + step / 250})
            rd.write_results({"zeroshot_top1": 0.6 + e + rng.normal(0, 0.005), "image_to_text_R@1": 0.5 + e,
                              "val_zeroshot_top1": 0.6 + e if converged else 0.6,
                              "wall_seconds": 30.0,
                              **({"train_seconds": seconds[i] + s} if seconds else {}),
                              **(extra[i] if extra else {})})
            rd.write_artifact("similarity_distribution", {
                "positive": (rng.normal(0.6 + e, 0.1, 200)).tolist(), "negative": rng.normal(0.1, 0.2, 800).tolist()})
    return root


def test_sweep_report_has_plots_table_and_config(tmp_path):
    root = fake_sweep(tmp_path / "sw", ROOT / "recipes/chapter5/temperature.yaml", "loss.temperature",
                      ["0.01", "0.07", "0.3"], [0.05, 0.1, -0.2])
    html = write_sweep_report(root).read_text()
    assert html.count("data:image/png;base64,") == 4  # metric vs tau, loss curves, tau curves, histograms
    assert "temperature-0.07" in html and "significant" in html
    assert "steps: 100" in html  # the resolved config
    assert "http://" not in html and "https://" not in html  # no network needed


def test_chapter5_table_is_generated_from_runs(tmp_path):
    t = fake_sweep(tmp_path / "temperature", ROOT / "recipes/chapter5/temperature.yaml", "loss.temperature",
                   ["0.01", "0.07", "0.3"], [0.05, 0.1, -0.2], seeds=range(7))
    b = fake_sweep(tmp_path / "batch_size", ROOT / "recipes/chapter5/batch_size.yaml", "train.batch_size",
                   ["64", "128"], [0.0, 0.001])
    out = tmp_path / "docs" / "chapter5.md"
    out.parent.mkdir()
    text = generate([t, b], out)
    assert "τ ∈ [0.01, 0.1]，过小导致梯度爆炸" in claim_text(ROOT / "recipes/chapter5/temperature.yaml")
    rows = claim_rows(text)
    assert len(rows) == 2
    assert "**held**" in rows[0] and "temperature-0.07: 0.70" in rows[0]
    assert "not significant at n=3" in rows[1]  # +0.001 is within the seed noise (sd 0.005)
    assert "meets the protocol" in rows[0] and "commit c0ffee" in rows[0]  # 7 seeds, converged baseline
    assert "**does not meet the protocol** (n=3 < 5 seeds)" in rows[1]
    assert ("budget: baseline temperature-" in rows[0]
            and "n = 7 paired seeds per comparison, 3 comparison(s)" in rows[0])
    # the table links to a copy of each sweep report kept beside it (committed with the docs)
    assert "](chapter5/temperature.html)" in rows[0]
    assert (out.parent / "chapter5" / "temperature.html").read_text() == (t / "report.html").read_text()


def test_chapter5_flip_verdict_weighs_accuracy_against_speed(tmp_path):
    f = fake_sweep(tmp_path / "flip_ratio", ROOT / "recipes/chapter5/flip_ratio.yaml",
                   "model.vision.patch_dropout", ["0.0", "0.5"], [0.0, -0.01], seconds=[60.0, 25.0], seeds=range(6))
    slow = fake_sweep(tmp_path / "flip_slow", ROOT / "recipes/chapter5/flip_ratio.yaml",
                      "model.vision.patch_dropout", ["0.0", "0.5"], [0.0, -0.08], seconds=[60.0, 45.0], seeds=range(6))
    out = tmp_path / "docs" / "chapter5.md"
    out.parent.mkdir()
    rows = claim_rows(generate([f, slow], out))
    assert "**held**: accuracy -" in rows[0] and "2.27x faster" in rows[0]  # seconds 62.5 / 27.5 (seed s adds s)
    assert "train 62 s" in rows[0]  # mean train seconds per arm beside the metric
    assert "**not held here**: accuracy -7." in rows[1] and "(significant)" in rows[1]
    assert "1.32x faster" in rows[1]


def test_chapter5_flip_speed_reads_cpu_seconds_without_the_evaluations(tmp_path):
    cpu = [{"train_cpu_seconds": 50.0, "eval_cpu_seconds_in_loop": 10.0},
           {"train_cpu_seconds": 26.0, "eval_cpu_seconds_in_loop": 10.0}]
    f = fake_sweep(tmp_path / "flip_ratio", ROOT / "recipes/chapter5/flip_ratio.yaml", "model.vision.patch_dropout",
                   ["0.0", "0.5"], [0.0, -0.01], seconds=[60.0, 60.0], seeds=range(6), extra=cpu)
    out = tmp_path / "docs" / "chapter5.md"
    out.parent.mkdir()
    row = claim_rows(generate([f], out))[0]
    # (50 - 10) / (26 - 10) = 2.5x on the CPU clock; the equal wall seconds (a loaded machine) are not used
    assert "training 2.50x faster (CPU seconds, evaluations excluded;" in row and "**held**" in row


def test_chapter5_res_curriculum_verdict_counts_tokens(tmp_path):
    rc = fake_sweep(tmp_path / "res_curriculum", ROOT / "recipes/chapter5/res_curriculum.yaml",
                    "data.batching.schedule", ["null", "{resolutions: [16, 36]}"], [0.0, -0.005],
                    extra=[{"train_tokens_per_image": 30.0}, {"train_tokens_per_image": 18.0}])
    out = tmp_path / "docs" / "chapter5.md"
    out.parent.mkdir()
    row = claim_rows(generate([rc], out))[0]
    # the fake sweep is short of the protocol, so its verdict reads as a description
    assert "description, reads as held at this budget: accuracy -0." in row
    assert "40% fewer training tokens per image" in row


def test_chapter5_row_uses_the_metric_named_in_the_recipe_header(tmp_path):
    recipe = tmp_path / "scenes_claim.yaml"
    recipe.write_text("# Claim (ours): a claim measured by retrieval.\n# Command: modalab sweep x\n"
                      f"# metric: image_to_text_R@1\nbase: {ROOT / 'recipes/clip_digits.yaml'}\n")
    s = fake_sweep(tmp_path / "scenes_claim", recipe, "model.vision.patch_dropout", ["0.0", "0.5"],
                   [0.0, 0.2], seeds=range(5))
    out = tmp_path / "docs" / "chapter5.md"
    out.parent.mkdir()
    row = claim_rows(generate([s], out))[0]
    assert "`image_to_text_R@1`:" in row
    assert "patch_dropout-0.5: 0.700" in row and "patch_dropout-0.0: 0.500" in row  # 0.5 + effect, no noise


def test_chapter5_batch_size_verdict_reads_equal_steps_and_equal_samples(tmp_path):
    root = fake_sweep(tmp_path / "batch_size", ROOT / "recipes/chapter5/batch_size.yaml", "train.batch_size",
                      ["128", "64", "32"], [0.0, -0.001, 0.03], seeds=range(7))
    plan = json.loads((root / "sweep.json").read_text())
    steps = {"128": "500", "64": "500", "32": "2000"}  # 32 x 2000 = 128 x 500 samples
    for arm in plan["arms"]:
        arm["params"]["train.steps"] = steps[arm["params"]["train.batch_size"]]
    (root / "sweep.json").write_text(json.dumps(plan))
    out = tmp_path / "docs" / "chapter5.md"
    out.parent.mkdir()
    row = claim_rows(generate([root], out))[0]
    assert "equal steps (batch_size-128 vs batch_size-64): **inconclusive**" in row
    assert "equal samples (batch_size-128 vs batch_size-32): **not held here**, -3.1 points" in row  # 0.03 + seed noise


def _has_chromium() -> bool:
    return any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))


@pytest.mark.slow
@pytest.mark.skipif(not _has_chromium(), reason="needs chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    root = fake_sweep(tmp_path / "sw", ROOT / "recipes/chapter5/temperature.yaml", "loss.temperature",
                      ["0.01", "0.07", "0.3"], [0.05, 0.1, -0.2])
    report = write_sweep_report(root)
    shot = tmp_path / "shot.png"
    res = subprocess.run([sys.executable, str(ROOT / "scripts/screenshot_report.py"), str(report), "--out", str(shot),
                          "--width", "1200"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4/4 images loaded" in res.stdout
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape[1] == 1200 and img.std() > 10  # not a blank page


def test_chapter5_noise_verdict_reads_the_cost_interval_against_the_margin(tmp_path):
    recipe = ROOT / "recipes/chapter5/noisy_pairs.yaml"
    ok = fake_sweep(tmp_path / "noisy_pairs", recipe, "data.noise.swap", ["0.0", "0.2", "0.4"],
                    [0.0, -0.005, -0.06], seeds=range(7))
    bad = fake_sweep(tmp_path / "noisy_bad", recipe, "data.noise.swap", ["0.0", "0.2", "0.4"],
                     [0.0, -0.08, -0.2], seeds=range(7))
    out = tmp_path / "docs" / "chapter5.md"
    out.parent.mkdir()
    rows = claim_rows(generate([ok, bad], out))
    rows = sorted(rows, key=lambda r: "noisy_bad.html" in r)  # [the held sweep, the failing one]
    assert "**held** (margin 2 points at swap 0.2" in rows[0]
    def costs(row: str) -> dict[float, tuple[float, float, float]]:
        pat = r"swap ([\d.]+): cost ([+-][\d.]+) points \[([+-][\d.]+), ([+-][\d.]+)\]"
        return {float(m[0]): (float(m[1]), float(m[2]), float(m[3])) for m in re.findall(pat, row)}

    cost = costs(rows[0])
    assert set(cost) == {0.2, 0.4}  # clean - noisy in points, with its interval, at every noise level
    assert abs(cost[0.2][0] - 0.5) < 0.3 and cost[0.2][2] < 2 and abs(cost[0.4][0] - 6.0) < 0.3 and cost[0.4][1] > 2
    assert "**not held here** (margin 2 points" in rows[1] and abs(costs(rows[1])[0.2][0] - 8.0) < 0.3
    assert "数据质量 vs 数量权衡：ALIGN 证明 1B 噪声数据可行" in rows[0]  # the verbatim claim from the recipe


def test_chapter5_noise_verdict_reads_a_swept_noise_section(tmp_path):
    """noise_scenes sweeps the whole data.noise section: null (the default recipe, clean) and {swap: p}."""
    recipe = ROOT / "recipes/chapter5/noise_scenes.yaml"
    root = fake_sweep(tmp_path / "noise_scenes", recipe, "data.noise", ["null", "{swap: 0.2}", "{swap: 0.4}"],
                      [0.0, -0.06, -0.15], seeds=range(6))
    out = tmp_path / "docs" / "chapter5.md"
    out.parent.mkdir()
    (row,) = claim_rows(generate([root], out))
    assert "description, reads as not held at this budget (margin 2 points at swap 0.2" in row  # short of the protocol
    assert re.search(r"swap 0\.2: cost \+6\.\d points", row) and re.search(r"swap 0\.4: cost \+15\.\d points", row)
    assert "数据质量 vs 数量权衡：ALIGN 证明 1B 噪声数据可行" in row


def test_chapter5_protocol_accepts_two_commits_with_the_same_code(tmp_path):
    """A baseline copied by sweep --reuse carries its own commit; code.json shows it is one computation."""
    recipe = ROOT / "recipes/chapter5/noise_scenes.yaml"
    root = fake_sweep(tmp_path / "noise_scenes", recipe, "data.noise", ["null", "{swap: 0.2}"], [0.0, -0.01],
                      seeds=range(6))
    runs = sorted(p.parent for p in root.glob("*/seed*/run.json"))
    for i, run in enumerate(runs):
        (run / "code.json").write_text(json.dumps({"modules": {"config.py": "ab"}, "packages": {"numpy": "2"}}))
        if i < 6:
            info = json.loads((run / "run.json").read_text())
            (run / "run.json").write_text(json.dumps({**info, "git_commit": "beef"}))
    out = tmp_path / "docs" / "chapter5.md"
    out.parent.mkdir()
    generate([root], out)
    text = out.read_text()
    assert "the same code: every run's code.json agrees" in text and "2 commits" not in text
    (runs[0] / "code.json").write_text(json.dumps({"modules": {"config.py": "cd"}, "packages": {"numpy": "2"}}))
    generate([root], out)
    assert "2 commits" in out.read_text()


def test_chapter5_protocol_flags_runs_on_another_cpu(tmp_path):
    recipe = ROOT / "recipes/chapter5/noise_scenes.yaml"
    root = fake_sweep(tmp_path / "noise_scenes", recipe, "data.noise", ["null", "{swap: 0.2}"], [0.0, -0.01],
                      seeds=range(6))
    for i, run in enumerate(sorted(p.parent for p in root.glob("*/seed*/run.json"))):
        cpu = {"model": "EPYC", "capability": "AVX512" if i == 7 else "AVX2"}
        (run / "code.json").write_text(json.dumps({"modules": {"config.py": "ab"}, "cpu": cpu}))
    out = tmp_path / "docs" / "chapter5.md"
    out.parent.mkdir()
    generate([root], out)
    cell = next(c for c in out.read_text().split(" | ") if "does not meet the protocol" in c)
    assert "CPU capability differs between" in cell
