"""``modalab sweep --reuse``: a finished run is copied only when training it again would reproduce it."""

import json
import subprocess
from pathlib import Path

import pytest

from modalab.config import load
from modalab.experiment.reuse import REUSED_FILE, Reuser, comparable
from modalab.experiment.rundir import RunDir, machine_info
from modalab.experiment.sweep import job_overrides, make_plan, parse_grid, run_sweep

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml"
TINY = ["train.steps=3", "train.batch_size=32", "model.vision.depth=1", "model.text.depth=1",
        "model.vision.width=32", "model.text.width=32", "train.log_every=1"]


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A git checkout with a src/ tree, its runs/ untracked (as in modalab's own checkout)."""
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "code.py").write_text("x = 1\n")
    (root / "README.md").write_text("r\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "one")
    return root


def faithful_launch(calls, **info):
    """Writes what a real run writes for reuse to read: the resolved config, a clean commit, the machine."""

    def launch(plan, job):
        calls.append(job.label)
        rd = RunDir.create(job.path, "", "x")
        rd.write_config(load(plan.snapshot, job_overrides(plan, job)).to_yaml())
        rd.write_run_info({"status": "finished", "git_commit": git(plan.root, "rev-parse", "HEAD"),
                           "git_dirty": False, "machine": {**machine_info(), "threads": 1}, **info})
        rd.write_results({"zeroshot_top1": 0.5 + 0.01 * job.seed + float(job.arm.params["loss.temperature"])})
        return 0

    return launch


def sweep(repo, name, temps, seeds, extra=(), reuse=(), calls=None, launch=None):
    plan = make_plan(repo / "runs" / name, RECIPE, parse_grid([f"loss.temperature={temps}"]), seeds,
                     ["train.steps=3", *extra])
    calls = [] if calls is None else calls
    return run_sweep(plan, launch=launch or faithful_launch(calls), progress=False, reuse=reuse), calls


def test_only_an_identical_run_is_reused(repo):
    sweep(repo, "a", "0.05,0.1", [0])
    # same recipe for temperature 0.05 seed 0; result-neutral keys (run name, checkpoints) may differ
    s, calls = sweep(repo, "b", "0.05,0.2", [0, 1], extra=["run.name=other", "train.checkpoint_every=2"],
                     reuse=[repo / "runs" / "a"])
    assert s.reused == ["temperature-0.05/seed0"]
    assert sorted(calls) == ["temperature-0.05/seed1", "temperature-0.2/seed0", "temperature-0.2/seed1"]
    got = repo / "runs" / "b" / "temperature-0.05" / "seed0"
    note = json.loads((got / REUSED_FILE).read_text())
    assert note["reused_from"] == str((repo / "runs" / "a" / "temperature-0.05" / "seed0").resolve())
    assert json.loads((got / "results.json").read_text())["zeroshot_top1"] == pytest.approx(0.55)
    assert "4 finished" in s.line() and "1 reused" in s.line()
    # a setting that changes training (the batch) is never reused
    s, calls = sweep(repo, "c", "0.05", [0], extra=["train.batch_size=16"], reuse=[repo / "runs" / "a"])
    assert not s.reused and calls == ["temperature-0.05/seed0"]
    # a reused copy is not a source itself: only runs trained here are
    names = {f"{c.path.parent.name}/{c.path.name}" for c in Reuser([repo / "runs" / "b"], repo).candidates}
    assert "temperature-0.05/seed0" not in names and "temperature-0.2/seed0" in names


def test_source_and_machine_must_match(repo):
    sweep(repo, "a", "0.05", [0])
    (repo / "README.md").write_text("changed docs\n")  # outside src/: the training code is the same
    git(repo, "commit", "-qam", "docs")
    s, _ = sweep(repo, "b", "0.05", [0], reuse=[repo / "runs" / "a"])
    assert s.reused == ["temperature-0.05/seed0"]
    (repo / "src" / "code.py").write_text("x = 2\n")  # an uncommitted edit of src/: nothing is reused
    s, calls = sweep(repo, "c", "0.05", [0], reuse=[repo / "runs" / "a"])
    assert not s.reused and calls
    git(repo, "commit", "-qam", "code")  # committed: src/ differs from the source run's commit
    cfg = load(RECIPE, ["train.steps=3", "loss.temperature=0.05", "run.seed=0", "run.progress=false",
                        "train.num_threads=1"]).to_dict()
    reuser = Reuser([repo / "runs" / "a"], repo)
    cand, why = reuser.find(cfg, {**machine_info(), "threads": 1})
    assert cand is None and "src/ differs" in why
    # back on the old src/: another torch version still blocks it
    (repo / "src" / "code.py").write_text("x = 1\n")
    git(repo, "commit", "-qam", "revert")
    reuser = Reuser([repo / "runs" / "a"], repo)
    assert reuser.find(cfg, {**machine_info(), "threads": 1})[0] is not None
    cand, why = reuser.find(cfg, {**machine_info(), "threads": 1, "torch": "0.0"})
    assert cand is None and "torch" in why


def test_comparable_drops_only_result_neutral_keys():
    cfg = load(RECIPE, []).to_dict()
    other = load(RECIPE, ["run.name=z", "train.log_every=3", "train.keep_checkpoints=5"]).to_dict()
    assert comparable(cfg) == comparable(other)
    assert comparable(cfg) != comparable(load(RECIPE, ["train.eval_every=7"]).to_dict())
    assert cfg["run"]["name"] != other["run"]["name"]  # the copy did not touch the original


def test_a_reused_run_equals_a_rerun(repo):
    """The premise: one thread, same seed, same code -> the same run, so copying equals training again."""
    from modalab.cli import main

    out = repo / "runs"
    assert main(["sweep", str(RECIPE), "--grid", "loss.temperature=0.05", "--seeds", "1", "--out",
                 str(out / "a"), "--no-progress", *TINY]) == 0
    assert main(["sweep", str(RECIPE), "--grid", "loss.temperature=0.05,0.1", "--seeds", "1", "--out",
                 str(out / "b"), "--no-progress", "--reuse", str(out / "a"), *TINY]) == 0
    assert (out / "b" / "temperature-0.05" / "seed0" / REUSED_FILE).is_file()
    assert not (out / "b" / "temperature-0.1" / "seed0" / REUSED_FILE).is_file()
    assert main(["sweep", str(RECIPE), "--grid", "loss.temperature=0.05", "--seeds", "1", "--out",
                 str(out / "c"), "--no-progress", *TINY]) == 0

    def measured(run: Path) -> dict:
        res = json.loads((run / "results.json").read_text())
        return {k: v for k, v in res.items() if "second" not in k and "per_s" not in k}

    a, c = (measured(out / d / "temperature-0.05" / "seed0") for d in ("a", "c"))
    assert a == c and "zeroshot_top1" in a
    assert main(["compare", str(out / "b")]) == 0
