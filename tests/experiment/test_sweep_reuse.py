"""``modalab sweep --reuse``: a finished run is copied only when training it again would reproduce it."""

import json
from pathlib import Path

import pytest

from modalab.config import load
from modalab.experiment.code_record import CODE_FILE, code_record
from modalab.experiment.reuse import REUSED_FILE, Reuser, comparable
from modalab.experiment.rundir import RunDir, machine_info
from modalab.experiment.sweep import job_overrides, make_plan, parse_grid, run_sweep

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml"
TINY = ["train.steps=3", "train.batch_size=32", "model.vision.depth=1", "model.text.depth=1",
        "model.vision.width=32", "model.text.width=32", "train.log_every=1"]


def faithful_launch(calls):
    """Writes what a real run writes for reuse to read: the resolved config, the code, the machine."""

    def launch(plan, job):
        calls.append(job.label)
        rd = RunDir.create(job.path, "", "x")
        rd.write_config(load(plan.snapshot, job_overrides(plan, job)).to_yaml())
        (job.path / CODE_FILE).write_text(json.dumps(code_record()))
        rd.write_run_info({"status": "finished", "machine": {**machine_info(), "threads": 1}})
        rd.write_results({"zeroshot_top1": 0.5 + 0.01 * job.seed + float(job.arm.params["loss.temperature"])})
        return 0

    return launch


def sweep(root, name, temps, seeds, extra=(), reuse=(), calls=None, launch=None):
    plan = make_plan(root / "runs" / name, RECIPE, parse_grid([f"loss.temperature={temps}"]), seeds,
                     ["train.steps=3", *extra])
    calls = [] if calls is None else calls
    return run_sweep(plan, launch=launch or faithful_launch(calls), progress=False, reuse=reuse), calls


def test_only_an_identical_run_is_reused(tmp_path):
    repo = tmp_path
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
    from modalab.experiment.report import write_sweep_report

    page = write_sweep_report(repo / "runs" / "b").read_text()
    assert "copied by <code>sweep --reuse</code>" in page and f"1 run(s): {repo / 'runs' / 'a'}" in page
    assert "every run&#x27;s code.json agrees" in page or "every run's code.json agrees" in page
    # a setting that changes training (the batch) is never reused
    s, calls = sweep(repo, "c", "0.05", [0], extra=["train.batch_size=16"], reuse=[repo / "runs" / "a"])
    assert not s.reused and calls == ["temperature-0.05/seed0"]
    # a reused copy is not a source itself: only runs trained here are
    names = {f"{c.path.parent.name}/{c.path.name}" for c in Reuser([repo / "runs" / "b"]).candidates}
    assert "temperature-0.05/seed0" not in names and "temperature-0.2/seed0" in names


def test_code_and_machine_must_match(tmp_path):
    repo = tmp_path
    sweep(repo, "a", "0.05", [0])
    cfg = load(RECIPE, ["train.steps=3", "loss.temperature=0.05", "run.seed=0", "run.progress=false",
                        "train.num_threads=1"]).to_dict()
    machine = {**machine_info(), "threads": 1}
    assert Reuser([repo / "runs" / "a"]).find(cfg, machine)[0] is not None
    cand, why = Reuser([repo / "runs" / "a"]).find(cfg, {**machine, "torch": "0.0"})
    assert cand is None and "torch" in why
    code = repo / "runs" / "a" / "temperature-0.05" / "seed0" / CODE_FILE
    rec = json.loads(code.read_text())
    assert "config.py" in rec["modules"] and "experiment/report.py" not in rec["modules"]
    # a module the run loaded has other bytes now: not the same computation
    code.write_text(json.dumps({**rec, "modules": {**rec["modules"], "config.py": "0" * 64}}))
    cand, why = Reuser([repo / "runs" / "a"]).find(cfg, machine)
    assert cand is None and "config.py changed" in why
    code.write_text(json.dumps({**rec, "packages": {**rec["packages"], "numpy": "0.0"}}))
    assert "numpy 0.0 then" in Reuser([repo / "runs" / "a"]).find(cfg, machine)[1]
    code.unlink()  # no record of its code: never reused
    s, calls = sweep(repo, "b", "0.05", [0], reuse=[repo / "runs" / "a"])
    assert not s.reused and calls == ["temperature-0.05/seed0"]


def test_comparable_drops_only_result_neutral_keys():
    cfg = load(RECIPE, []).to_dict()
    other = load(RECIPE, ["run.name=z", "train.log_every=3", "train.keep_checkpoints=5"]).to_dict()
    assert comparable(cfg) == comparable(other)
    assert comparable(cfg) != comparable(load(RECIPE, ["train.eval_every=7"]).to_dict())
    assert cfg["run"]["name"] != other["run"]["name"]  # the copy did not touch the original


def test_a_reused_run_equals_a_rerun(tmp_path):
    """The premise: one thread, same seed, same code -> the same run, so copying equals training again."""
    repo = tmp_path
    # (real runs write code.json themselves)
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


def test_runs_from_two_commits_with_the_same_code_are_one_computation(tmp_path):
    from modalab.experiment.code_record import code_conflict
    from modalab.experiment.doctor_sweep import check_provenance

    sweep(tmp_path, "a", "0.05,0.1", [0])
    root = tmp_path / "runs" / "a"
    runs = sorted(p.parent for p in root.glob("*/seed0/run.json"))
    for i, run in enumerate(runs):  # e.g. a baseline copied from a sweep made at an earlier commit
        info = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**info, "git_commit": f"c{i}"}))
    assert code_conflict(runs) is None
    (finding,) = check_provenance(root)
    assert finding.severity == "info" and "same code" in finding.message
    rec = json.loads((runs[1] / CODE_FILE).read_text())
    (runs[1] / CODE_FILE).write_text(json.dumps({**rec, "modules": {**rec["modules"], "config.py": "0" * 64}}))
    assert "modalab/config.py differs" in code_conflict(runs)
    assert [f.severity for f in check_provenance(root)] == ["warning"]
    (runs[1] / CODE_FILE).unlink()
    assert "no readable code.json" in code_conflict(runs)


def test_another_cpu_is_another_machine(tmp_path):
    """Cloud hosts often share one host name; the CPU model and torch's kernel set tell them apart."""
    from modalab.experiment.code_record import code_conflict, code_differs, cpu_info
    from modalab.experiment.doctor_sweep import check_provenance

    assert cpu_info()["capability"] and cpu_info()["model"]
    sweep(tmp_path, "a", "0.05,0.1", [0])
    root = tmp_path / "runs" / "a"
    runs = sorted(p.parent for p in root.glob("*/seed0/run.json"))
    rec = json.loads((runs[1] / CODE_FILE).read_text())
    assert rec["cpu"] == cpu_info() and code_differs(rec) is None
    other = {**rec, "cpu": {**rec["cpu"], "capability": "AVX512"}}
    (runs[1] / CODE_FILE).write_text(json.dumps(other))
    assert "CPU " in code_differs(other) and code_conflict(runs).startswith("CPU capability differs")
    assert [f.severity for f in check_provenance(root)] == ["warning"]
    from modalab.experiment.report import write_sweep_report

    page = write_sweep_report(root).read_text()
    assert "runs differ in commit or machine" in page and "CPU capability differs" in page
    cfg = load(RECIPE, ["train.steps=3", "loss.temperature=0.1", "run.seed=0", "run.progress=false",
                        "train.num_threads=1"]).to_dict()
    cand, why = Reuser([root]).find(cfg, {**machine_info(), "threads": 1})
    assert cand is None and "CPU" in why
