"""The unified understand + generate task: mixture, stages, frozen tokenizer, results, resume."""

import json
from pathlib import Path

import pytest
import torch

from modalab import registry
from modalab.config import ConfigError, load
from modalab.experiment.rundir import RunDir
from modalab.experiment.runner import run

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "unified_digits.yaml"
TINY = [
    "model.tokenizer.pretrain_steps=10", "model.transformer.dim=32", "model.transformer.depth=1",
    "model.diffusion.channels=8", "train.batch_size=32", "train.log_every=2", "train.eval_every=0",
    "run.progress=false", "eval.generate_samples=12", "eval.ddim_steps=3", "eval.grid_per_class=1",
    "train.steps=6", "optim.warmup_steps=0", "eval.feature_net_steps=150", "eval.score_encoder_steps=30",
    'train.stages=[{name: branches, steps: 2, trainable: ["transformer.*", "diffusion.*"]}, '
    '{name: interface, steps: 2, trainable: ["transformer.*"]}, '
    '{name: joint, steps: 2, trainable: ["transformer.*", "diffusion.*"]}]',
]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_unified_recipe_runs_end_to_end(tmp_path):
    out = run(load(RECIPE, TINY), tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    for key in ("understand_accuracy", "generate_class_match_ar", "generate_class_match_diffusion"):
        assert 0.0 <= res[key] <= 1.0
    assert res["judge_test_accuracy"] > 0.95  # the judge is trustworthy
    assert res["sample_seconds_per_image_ar"] > 0 and res["sample_seconds_per_image_diffusion"] > 0
    assert res["generate_samples"] == 12 and res["num_test"] == 450
    import math

    for path in ("ar", "diffusion"):  # distribution scores (eval/generation_report.py), all finite
        for m in ("fid", "kid", "kid_se", "precision", "recall", "clip_score", "r_precision"):
            assert math.isfinite(res[f"generate_{m}_{path}"]), (m, path)
        assert res[f"generate_fid_{path}"] >= 0 and 0 <= res[f"generate_clip_score_{path}"] <= 2.5
    assert 0 <= res["fid_real_floor"] < res["generate_fid_ar"]  # 6 steps of training: far from real
    assert 0 <= res["fid_real_train_same_n"] < res["generate_fid_diffusion"]
    assert 0 < res["clip_score_real"] <= 2.5 and 0 <= res["r_precision_real"] <= 1
    assert res["feature_net_test_accuracy"] > 0.6  # chance 0.1
    assert len(list((out / "eval_nets").glob("*.safetensors"))) == 2  # feature net + score encoder
    assert (out / "artifacts" / "generated_ar.png").stat().st_size > 100
    assert (out / "artifacts" / "generated_diffusion.png").is_file()
    from safetensors.torch import load_file

    kept = load_file(str(out / "artifacts" / "generated.safetensors"))
    assert kept["images_ar"].shape == kept["images_diffusion"].shape == (12, 1, 16, 16)
    assert kept["prompted_class"].shape == (12,) and 0 <= float(kept["images_ar"].min())
    recs = _records(out)
    stages = [r["name"] for r in recs if r.get("event") == "stage"]
    assert stages[-2:] == ["interface", "joint"]
    logged = [r for r in recs if "mix/realised/understand" in r]
    assert logged and all(abs(r["mix/realised/understand"] + r["mix/realised/generate"] - 1) < 1e-9
                          for r in logged)
    assert logged[0]["mix/target/understand"] == pytest.approx(0.75)  # 3 : 1 in the first half
    assert logged[-1]["mix/target/understand"] == pytest.approx(0.5)  # 1 : 1 after
    by_phase = res["mix_realised_by_phase"]
    assert set(by_phase) == {"0", "1"}


def _task(tmp_path, extra=()):
    recipe = load(RECIPE, [*TINY, *extra])
    return registry.build("task", "unified", recipe, RunDir.create(tmp_path / "r", str(tmp_path), "u"))


def test_tokenizer_stays_frozen_and_mixture_is_realised(tmp_path):
    task = _task(tmp_path, ["train.batch_size=64"])
    before = {k: v.clone() for k, v in task.model.tokenizer.state_dict().items()}
    task.model.train()
    batch = next(iter(task.train_loader()))
    for step in range(4):
        loss, logs = task.step(batch)
        loss.backward()
        task.after_step(step)
    after = task.model.tokenizer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no EMA or weight change
    assert not any(p.requires_grad for p in task.model.tokenizer.parameters())
    assert sum(task.sampler.counts.values()) == 4 * 64
    assert 0.6 < task.sampler.realised()["understand"] < 0.9  # target 0.75 in phase 0


def test_diffusion_loss_reaches_the_transformer_only_from_the_interface_stage(tmp_path):
    task = _task(tmp_path, ['loss.mix=[{start: 0.0, weights: {understand: 0, generate: 1}}]'])
    tr = task.model.transformer
    tr.generate_loss = lambda *a, **k: torch.zeros(())  # keep only the diffusion term
    batch = next(iter(task.train_loader()))

    def transformer_grad(step: int) -> float:
        task.global_step = step
        task.model.zero_grad(set_to_none=True)
        task.step(batch)[0].backward()
        return sum(float(p.grad.abs().sum()) for p in tr.parameters() if p.grad is not None)

    assert transformer_grad(0) == 0.0  # branches: the condition is detached
    assert transformer_grad(2) > 0.0  # interface: the diffusion loss trains the transformer
    assert transformer_grad(5) > 0.0  # joint


def test_diffusion_on_every_item_trains_the_decoder_not_the_transformer_from_understand_items(tmp_path):
    """loss.diffusion_items=all: with every item picked 'understand', the decoder still learns from
    each image, and the transformer's gradient is exactly that of the understand loss (the mix it
    sees is unchanged); with every item 'generate' it matches the default mode's gradient."""
    def grads(extra: list[str], mix: str, step: int) -> tuple[dict, float]:
        torch.manual_seed(0)  # the same weights, batch and draws in each build
        task = _task(tmp_path / f"{mix}{len(extra)}{step}", [f"loss.mix=[{{start: 0.0, weights: {mix}}}]", *extra])
        batch = next(iter(task.train_loader()))
        task.global_step = step
        torch.manual_seed(1)
        loss, logs = task.step(batch)
        loss.backward()
        tr = {k: p.grad.clone() for k, p in task.model.transformer.named_parameters() if p.grad is not None}
        dec = sum(float(p.grad.abs().sum()) for p in task.model.diffusion.parameters() if p.grad is not None)
        return tr, dec, logs

    und = "{understand: 1, generate: 0}"
    tr_all, dec_all, logs = grads(["loss.diffusion_items=all"], und, 2)  # interface stage: attached
    tr_def, dec_def, _ = grads(["loss.diffusion_items=generate"], und, 2)
    assert dec_all > 0.0 and dec_def == 0.0 and "loss/diffusion" in logs
    assert tr_all.keys() == tr_def.keys() and all(torch.equal(tr_all[k], tr_def[k]) for k in tr_all)
    gen = "{understand: 0, generate: 1}"
    tr_all, dec_all, _ = grads(["loss.diffusion_items=all"], gen, 2)
    tr_def, dec_def, _ = grads(["loss.diffusion_items=generate"], gen, 2)
    assert dec_all == dec_def and all(torch.allclose(tr_all[k], tr_def[k]) for k in tr_def)


def test_ema_decoder_samples_saves_and_is_not_stepped_twice_by_a_resume(tmp_path):
    task = _task(tmp_path, ["loss.ema_decay=0.9"])
    assert set(task.extra_modules()) == {"ema"}
    live = task.model.diffusion
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    task.after_step(0)  # ema <- 0.9 ema + 0.1 live
    first = [p.clone() for p in task.ema.parameters()]
    task.after_step(0)  # the runner's replay on resume: no second update
    assert all(torch.equal(a, b) for a, b in zip(first, task.ema.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(first, live.parameters()))
    seen = []
    task.model.diffusion.ddim_sample = None  # the live decoder must not be called
    task.ema.ddim_sample = lambda shape, *a, **k: seen.append(shape) or torch.zeros(shape)
    out = task.generate(["a handwritten seven"] * 2, "diffusion", seed=0)
    assert seen and out.shape[0] == 2 and task.model.diffusion is live


def test_state_round_trip_restores_mixture_counts(tmp_path):
    task = _task(tmp_path)
    task.sampler.choose(0, 32)
    task.after_step(0)
    state = json.loads(json.dumps(task.state()))  # what a checkpoint stores
    fresh = _task(tmp_path / "b")
    fresh.load_state(state)
    assert fresh.global_step == 1
    assert fresh.sampler.realised() == task.sampler.realised()
    assert fresh.sampler.phase_counts == task.sampler.phase_counts


def test_bad_mix_is_a_clear_error(tmp_path):
    with pytest.raises((ValueError, ConfigError), match="understand"):
        _task(tmp_path, ['loss.mix=[{start: 0.0, weights: {caption: 1, generate: 1}}]'])


def test_doctor_checks_realised_mix(tmp_path):
    from modalab.experiment.doctor_mix import check_mix
    from modalab.experiment.doctor_view import RunView
    from modalab.data.mixing import MixtureSampler, MixtureSchedule

    def write(run: Path, bias: float) -> RunView:
        run.mkdir()
        sched = MixtureSchedule([(0.0, {"understand": 3, "generate": 1}),
                                 (0.5, {"understand": 1, "generate": 1})])
        s = MixtureSampler(sched, total_steps=200, seed=0)
        lines = []
        for step in range(200):
            names = s.choose(step, 32)
            if bias:  # a buggy sampler: some 'generate' draws become 'understand'
                flip = int(bias * names.count("generate"))
                s.counts.update({"understand": flip, "generate": -flip})
                s.phase_counts[s.last_phase].update({"understand": flip, "generate": -flip})
            if (step + 1) % 10 == 0:
                lines.append(json.dumps({"step": step + 1, "loss": 1.0, **s.log(step)}))
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        return RunView(run)

    assert check_mix(write(tmp_path / "ok", 0.0)) == []
    found = check_mix(write(tmp_path / "bad", 0.5))
    assert found and all(f.severity == "warning" for f in found)
    assert "phase 0" in found[0].message and "target 25.0%" in " ".join(f.message for f in found)


@pytest.mark.slow
def test_unified_recipe_meets_its_targets(tmp_path):
    """Full recipe (13.5 min on an idle core before the val sweep; 50 min beside two training jobs, session 16):
    understanding >= 0.90 on test, and both generation paths draw the prompted digit for >= 80% of held-out
    captions, judged here by a second classifier fitted on real digits. Seed 0 at commit db7767f (TEST):
    understand 0.962, class-match AR 0.900 (temperature 0.3), diffusion 0.965 (guidance 1.25)."""
    from safetensors.torch import load_file
    from sklearn.linear_model import LogisticRegression

    from modalab.data.dataset import stratified_split
    from modalab.data.sources.digits import load_digit_images

    out = run(load(RECIPE, ["run.progress=false"]), tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    assert res["understand_accuracy"] >= 0.90  # issue 21's target; seeds 5-9: 0.958-0.987
    images, labels = load_digit_images(16)
    train_idx, test_idx = stratified_split(labels.tolist(), len(labels), 0.25, 0)
    clf = LogisticRegression(max_iter=2000).fit(images[train_idx].flatten(1).numpy(), labels[train_idx].numpy())
    assert clf.score(images[test_idx].flatten(1).numpy(), labels[test_idx].numpy()) > 0.93
    kept = load_file(str(out / "artifacts" / "generated.safetensors"))
    for path in ("ar", "diffusion"):
        assert res[f"generate_class_match_{path}"] >= 0.8
        pred = clf.predict(kept[f"images_{path}"].flatten(1).numpy())
        assert (pred == kept["prompted_class"].numpy()).mean() >= 0.75  # a second judge agrees


def test_samplers_are_chosen_on_val_before_the_test(tmp_path):
    """eval.sweep_guidance / sweep_ar_temperature: every setting scored on val (each caption
    select_repeats times), the rule's pick per path used for the test."""
    over = [*TINY, "train.steps=2",
            'train.stages=[{name: branches, steps: 2, trainable: ["transformer.*", "diffusion.*"]}]',
            "eval.sweep_guidance=[{guidance: 1.0}, {guidance: 3.0, guidance_interval: [0, 500]}]",
            "eval.sweep_ar_temperature=[0.3, 1.0]", "eval.select_repeats=2", "eval.select_confidence=0.9",
            "eval.select_min_class_match=0.0", "eval.distribution_scores=false"]
    out = run(load(RECIPE, over), tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    sweep = json.loads((out / "artifacts" / "val_sweep.json").read_text())
    assert sweep["split"] == "val" and sweep["n"] == 24 and sweep["captions"] == 12 and "Wilson" in sweep["rule"]
    for path in ("ar", "diffusion"):
        rows = sweep[path]["rows"]
        assert len(rows) == 2 and all(r["n"] == 24 for r in rows)
        best = min(range(2), key=lambda i: (rows[i]["fid"], i))  # every row's bound clears a bar of 0
        assert sweep[path]["chosen"] == best
    d, a = sweep["diffusion"], sweep["ar"]
    assert res["chosen_guidance"] == d["rows"][d["chosen"]]["guidance"]
    assert (res["chosen_guidance_lo"] == -1) == (d["rows"][d["chosen"]]["guidance_interval"] is None)
    assert res["chosen_ar_temperature"] == a["rows"][a["chosen"]]["temperature"]
    assert res["chosen_cleared_bar_ar"] == 1.0 and a["cleared"] and d["cleared"]  # a bar of 0: every row clears


def test_a_path_that_misses_the_val_bar_is_flagged(tmp_path):
    over = [*TINY, "train.steps=2", 'train.stages=[{name: branches, steps: 2, trainable: ["transformer.*"]}]',
            "eval.sweep_ar_temperature=[1.0, 2.0]", "eval.sweep_guidance=[]", "eval.select_min_class_match=1.0",
            "eval.select_confidence=0.5",
            "eval.distribution_scores=false"]
    with pytest.warns(UserWarning, match="no ar setting cleared the val bar"):
        out = run(load(RECIPE, over), tmp_path / "run")  # 2 steps cannot draw every digit right
    res = json.loads((out / "results.json").read_text())
    sweep = json.loads((out / "artifacts" / "val_sweep.json").read_text())
    assert res["chosen_cleared_bar_ar"] == 0.0 and not sweep["ar"]["cleared"] and "diffusion" not in sweep
    rows = sweep["ar"]["rows"]
    assert sweep["ar"]["chosen"] == max(range(2), key=lambda i: (rows[i]["class_match"], -i))


def test_ar_temperature_override_reaches_the_sampler(tmp_path):
    """generate(..., temperature=t) samples the AR path at t: greedy codes repeat for a repeated prompt."""
    task = _task(tmp_path)
    prompts = [task.data.texts[0]] * 2
    task.model.eval()  # no dropout
    with torch.no_grad():
        greedy = task.generate(prompts, "ar", seed=0, temperature=0.0)
        hot = task.generate(prompts, "ar", seed=0, temperature=5.0)
    assert torch.equal(greedy[0], greedy[1])
    assert not torch.equal(hot[0], hot[1])
