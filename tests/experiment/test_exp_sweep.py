"""Sweeps: grid expansion, the '# sweep:' header, resumability after an interruption, failures."""

import json
from pathlib import Path

import pytest

from modalab.experiment.rundir import RunDir
from modalab.experiment.store import Store, store_path
from modalab.experiment.sweep import (
    SweepError, expand_grid, header_args, load_plan, make_plan, parse_grid, run_status, run_sweep,
)

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_grid_expansion_is_the_cartesian_product():
    grid = parse_grid(["loss.temperature=0.01,0.03,0.07", "train.batch_size=64,128"])
    arms = expand_grid(grid)
    assert len(arms) == 6
    assert arms[0].overrides == ("loss.temperature=0.01", "train.batch_size=64")
    assert arms[1].overrides == ("loss.temperature=0.01", "train.batch_size=128")
    assert arms[0].name == "temperature-0.01__batch_size-64"
    assert len({a.name for a in arms}) == 6
    # commas inside brackets stay in one value
    g = parse_grid(["loss.negatives={name: mixed, hard_fraction: 0.2},{name: curriculum}"])
    assert g["loss.negatives"] == ["{name: mixed, hard_fraction: 0.2}", "{name: curriculum}"]
    assert expand_grid({}) [0].name == "base"
    with pytest.raises(SweepError, match="key.sub=v1,v2"):
        parse_grid(["temperature"])
    with pytest.raises(SweepError, match="given twice"):
        parse_grid(["a.b=1", "a.b=2"])


def test_chapter5_recipes_have_sweep_headers():
    for name in ("temperature", "batch_size", "negative_mix", "curriculum"):
        args = header_args(RECIPES / "chapter5" / f"{name}.yaml")
        assert args[0] == "--grid" and "--seeds" in args, name


def fake_launch(calls, fail=(), stop_after=None):
    """A launcher that writes a finished (or failed) run directory instead of training."""

    def launch(plan, job):
        if stop_after is not None and len(calls) >= stop_after:
            rd = RunDir.create(job.path, "", "x")  # started, then the sweep is killed
            rd.write_run_info({"status": "running", "seed": job.seed})
            raise KeyboardInterrupt
        calls.append(job.label)
        rd = RunDir.create(job.path, "", "x")
        rd.write_run_info({"name": "x", "seed": job.seed, "status": "running", "started": f"t{len(calls)}"})
        if job.label in fail:
            rd.update_run_info(status="failed", error="RuntimeError: boom")
            return 1
        tau = float(job.arm.params.get("loss.temperature", 0.07))
        rd.log({"step": 1, "loss": 2.0 + tau})
        rd.write_results({"zeroshot_top1": 0.5 + tau + 0.01 * job.seed})
        rd.update_run_info(status="finished")
        return 0

    return launch


def test_sweep_resumes_after_interruption_without_repeating(tmp_path):
    recipe = RECIPES / "clip_digits.yaml"
    grid = parse_grid(["loss.temperature=0.01,0.07"])
    plan = make_plan(tmp_path / "sw", recipe, grid, [0, 1, 2], ["train.steps=3"])
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan, launch=fake_launch(calls, stop_after=2), progress=False)
    assert calls == ["temperature-0.01/seed0", "temperature-0.01/seed1"]
    assert run_status(tmp_path / "sw/temperature-0.01/seed2") == "incomplete"
    started = {j.label: json.loads((j.path / "run.json").read_text())["started"] for j in plan.jobs[:2]}

    # resume: only the four missing runs, the interrupted one from scratch
    plan2 = make_plan(tmp_path / "sw", recipe, grid, [0, 1, 2], ["train.steps=3"])
    calls2: list[str] = []
    s = run_sweep(plan2, launch=fake_launch(calls2), progress=False)
    assert sorted(calls2) == sorted(j.label for j in plan.jobs[2:])
    assert len(s.finished) == 2 and len(s.ran) == 4 and not s.failed
    for j in plan.jobs[:2]:  # the finished runs were not touched
        assert json.loads((j.path / "run.json").read_text())["started"] == started[j.label]
    assert all(run_status(j.path) == "finished" for j in plan.jobs)
    # a third call does nothing
    calls3: list[str] = []
    assert len(run_sweep(plan2, launch=fake_launch(calls3), progress=False).finished) == 6 and not calls3
    # the store indexed every run
    with Store(store_path(tmp_path / "sw")) as st:
        assert len(st.runs()) == 6 and len(st.final("zeroshot_top1")) == 6
    assert load_plan(tmp_path / "sw").seeds == [0, 1, 2]


def test_failed_runs_are_reported_and_rerun_on_request(tmp_path):
    plan = make_plan(tmp_path / "sw", RECIPES / "clip_digits.yaml", parse_grid(["train.steps=2,3"]), [0], [])
    calls: list[str] = []
    s = run_sweep(plan, launch=fake_launch(calls, fail={"steps-3/seed0"}), progress=False)
    assert s.failed == ["steps-3/seed0"] and s.ran == ["steps-2/seed0"]
    calls = []
    s = run_sweep(plan, launch=fake_launch(calls), progress=False)
    assert calls == [] and s.failed == ["steps-3/seed0"]  # reported, not rerun
    s = run_sweep(plan, retry_failed=True, launch=fake_launch(calls), progress=False)
    assert calls == ["steps-3/seed0"] and not s.failed


def test_a_different_plan_in_the_same_directory_is_an_error(tmp_path):
    r = RECIPES / "clip_digits.yaml"
    make_plan(tmp_path, r, parse_grid(["train.steps=2,3"]), [0], []).save()
    with pytest.raises(SweepError, match="different sweep"):
        make_plan(tmp_path, r, parse_grid(["train.steps=2,4"]), [0], [])


@pytest.mark.slow
def test_real_sweep_subprocesses(tmp_path):
    from modalab.cli import main

    tiny = ["train.steps=3", "train.batch_size=32", "model.vision.depth=1", "model.text.depth=1",
            "model.vision.width=32", "model.text.width=32", "train.log_every=1"]
    rc = main(["sweep", str(RECIPES / "clip_digits.yaml"), "--grid", "loss.temperature=0.05,0.1",
               "--seeds", "1", "--out", str(tmp_path / "sw"), "--no-progress", *tiny])
    assert rc == 0
    for arm in ("temperature-0.05", "temperature-0.1"):
        info = json.loads((tmp_path / "sw" / arm / "seed0" / "run.json").read_text())
        assert info["status"] == "finished" and "train.num_threads=1" in info["overrides"]
    assert main(["compare", str(tmp_path / "sw")]) == 0


CHAPTER5 = sorted((RECIPES / "chapter5").glob("*.yaml"))


@pytest.mark.parametrize("recipe", CHAPTER5, ids=lambda p: p.stem)
def test_chapter5_recipe_arms_validate(recipe):
    """Every arm of every chapter-5 sweep recipe is a valid recipe (what `modalab sweep` runs)."""
    from modalab.config import load

    args = header_args(recipe)
    grid = parse_grid([args[i + 1] for i, a in enumerate(args) if a == "--grid"])
    arms = expand_grid(grid)
    assert len(arms) >= 2 and "Claim" in recipe.read_text().splitlines()[0]
    for arm in arms:
        r = load(recipe, list(arm.overrides))
        # CPU-sized sweeps: the protocol's converged budgets fit (1200 steps for temperature and FLIP;
        # 3000 for res_curriculum's small towers, ~7 CPU-min a run, the longest)
        assert r.train.steps <= 3000


def test_sweep_directory_is_locked(tmp_path):
    import fcntl

    plan = make_plan(tmp_path / "sw", RECIPES / "clip_digits.yaml", parse_grid(["train.steps=2"]), [0], [])
    plan.root.mkdir(parents=True)
    with open(plan.root / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SweepError, match="another modalab sweep"):
            run_sweep(plan, launch=fake_launch([]), progress=False)
