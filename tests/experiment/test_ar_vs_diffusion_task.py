"""Task ar_vs_diffusion end to end on a tiny budget: the val choice before the test, every table key,
the editing invariants; the selection rule on its own."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from modalab.config import ConfigError, load
from modalab.experiment.runner import run
from modalab.eval.sampler_select import clears, pick

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "ar_vs_diffusion.yaml"
TINY = [
    "model.tokenizer.pretrain_steps=10", "model.ar.dim=32", "model.ar.depth=1", "model.diffusion_text.dim=32",
    "model.diffusion_text.depth=1", "model.diffusion.channels=8", "train.steps=4", "train.batch_size=32",
    "train.eval_every=2", "train.log_every=2", "optim.warmup_steps=0", "run.progress=false",
    'train.stages=[{name: both, steps: 4, trainable: ["ar.*", "diffusion_text.*", "diffusion.*"]}]',
    "eval.generate_samples=12", "eval.latency_samples=2", "eval.edit_samples=6", "eval.edit_sweeps=1",
    "eval.sampler.ddim_steps=3", "eval.sweep_ar_temperature=[0.5, 1.0]",
    "eval.sweep_guidance=[{guidance: 1.0}, {guidance: 2.0, guidance_interval: [0, 500]}]",
    "eval.feature_net_steps=60", "eval.score_encoder_steps=20",
]


def test_ar_vs_diffusion_runs_end_to_end(tmp_path):
    out = run(load(RECIPE, TINY), tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    for path in ("ar", "diffusion"):
        for key in ("class_match", "generate_fid", "generate_kid", "generate_clip_score", "sample_cpu_s_per_image",
                    "sample_cpu_s_per_batch", "peak_mib_sample", "peak_mib_train_step", "final_loss",
                    "loss_spikes", "edit_class_match", "edit_outside_change", "val_class_match", "val_fid"):
            assert math.isfinite(res[f"{key}_{path}"]), (key, path)
    assert res["edit_outside_change_diffusion"] == 0.0  # RePaint pastes the known pixels back
    assert res["edit_samples"] == 6 and res["generate_samples"] == 12 and res["num_test"] == 450
    sweep = json.loads((out / "artifacts" / "val_sweep.json").read_text())
    assert len(sweep["ar"]["rows"]) == 2 and len(sweep["diffusion"]["rows"]) == 2
    assert sweep["sampler"]["ar_temperature"] == res["chosen_ar_temperature"]
    assert sweep["sampler"]["guidance"] == res["chosen_guidance"]
    for path in ("ar", "diffusion"):  # the rule's fallback is flagged in results and the sweep log
        best = sweep[path]["rows"][sweep[path]["chosen"]]
        assert res[f"chosen_cleared_bar_{path}"] == float(sweep[path]["cleared"])
        assert sweep[path]["cleared"] == clears(best, 0.9, 0.9)  # the recipe's bar and confidence
    assert res["params"]["ar"] > 0 and res["params"]["diffusion"] > 0


def test_pick_rule_and_bad_keys():
    rows = [{"class_match": 0.95, "fid": 30.0}, {"class_match": 0.92, "fid": 10.0}, {"class_match": 0.5, "fid": 5.0}]
    assert pick(rows, 0.9) == 1  # lowest FID above the bar
    assert pick(rows, 0.99) == 0  # none above: the highest class-match
    with pytest.raises(ValueError, match="no rows"):
        pick([], 0.9)
    with pytest.raises(ConfigError, match="edit_rowz"):
        load(RECIPE, ["eval.edit_rowz=[0, 8]"])


def test_sampling_is_deterministic_in_training_mode_too(tmp_path):
    """The EMA branch samples without dropout even after the runner put the model in train mode."""
    import torch

    from modalab import registry
    from modalab.experiment.rundir import RunDir

    recipe = load(RECIPE, TINY + ["model.diffusion_text.dropout=0.5", "model.ar.dropout=0.5"])
    task = registry.build("task", "ar_vs_diffusion", recipe, RunDir(tmp_path / "r"))
    task.model.train()
    task.ema.train()
    task.evaluate(final=False, split="test")  # what the runner may call mid-training
    s = task.eval_cfg.sampler
    a = task.sample("diffusion", ["a handwritten seven"] * 3, s, seed=0)
    b = task.sample("diffusion", ["a handwritten seven"] * 3, s, seed=0)
    assert torch.equal(a, b) and not task.ema.training


def test_resume_keeps_the_loss_history_of_every_step(tmp_path, capsys):
    """Final loss and spike count of a resumed run cover the steps before the resume too."""
    from resume_helpers import assert_same_checkpoint, stopped_and_resumed

    over = [*TINY, "train.steps=6", "train.eval_every=2", "train.checkpoint_every=3", "train.keep_checkpoints=3",
            'train.stages=[{name: both, steps: 6, trainable: ["ar.*", "diffusion_text.*", "diffusion.*"]}]',
            "eval.edit_samples=0", "eval.memory_probe=false"]
    ref, res = stopped_and_resumed(RECIPE, over, tmp_path, at=3, end=6)
    assert_same_checkpoint(ref, res, 6, ("model", "ema"))  # the replayed after_step does not step the EMA
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (ref, res))
    for path in ("ar", "diffusion"):
        assert ra[f"loss_history_steps_{path}"] == rb[f"loss_history_steps_{path}"] == 6
        assert ra[f"final_loss_{path}"] == rb[f"final_loss_{path}"]
        assert ra[f"loss_spikes_{path}"] == rb[f"loss_spikes_{path}"]
        assert ra[f"class_match_{path}"] == rb[f"class_match_{path}"]
    # the table script: the budget rule on both paths; a warning when loss rows miss steps
    rb["loss_history_steps_ar"] = 3
    rb["chosen_cleared_bar_ar"], rb["chosen_cleared_bar_diffusion"] = 0.0, 1.0
    (res / "results.json").write_text(json.dumps(rb))
    table = _table_module()
    table.main([ref, res])
    out = capsys.readouterr().out
    assert "budget check (baseline arm ar, val_class_match_ar" in out and "baseline arm diffusion" in out
    assert f"WARNING {res}: loss rows of ar cover 3 of 6 steps" in out and "loss rows of diffusion" not in out
    assert "| final training loss (mean of last 5%) |" in out
    chosen = next(line for line in out.splitlines() if line.startswith(f"| {res.name} |"))
    assert chosen.count("(none cleared the bar)") == 1 and f"{rb['chosen_guidance']} |" in chosen


def _table_module():
    import importlib.util
    import sys

    path = RECIPE.parents[1] / "benchmarks" / "ar_vs_diffusion_table.py"
    spec = importlib.util.spec_from_file_location("ar_vs_diffusion_table", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod


def test_a_malformed_loss_history_in_a_checkpoint_is_refused(tmp_path):
    from modalab import registry
    from modalab.experiment.rundir import RunDir

    task = registry.build("task", "ar_vs_diffusion", load(RECIPE, TINY), RunDir(tmp_path / "r"))
    state = task.state()
    with pytest.raises(ValueError, match="loss_history"):
        task.load_state({**state, "global_step": 2, "loss_history": {"ar": [1.0, 0.9], "diffusion": [0.5]}})
    task.load_state({**state, "global_step": 2, "loss_history": {"ar": [1.0, 0.9], "diffusion": [0.5, 0.4]}})
    assert task.history == {"ar": [1.0, 0.9], "diffusion": [0.5, 0.4]} and task.global_step == 2
    old = {k: v for k, v in state.items() if k != "loss_history"}  # written before the history was saved
    task.load_state({**old, "global_step": 3})
    assert task.history == {"ar": [], "diffusion": []}  # results then say loss_history_steps_* = post-resume steps
