"""Sweeps: a killed sweep leaves no orphaned job, and a rerun never deletes a live run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_helpers import RECIPE, TINY

from modalab.experiment.liveness import pid_alive
from modalab.experiment.rundir import RunDir
from modalab.experiment.sweep import make_plan, run_sweep


def test_rerun_never_deletes_a_live_run(tmp_path):
    """Before: the rerun deleted the folder of a run whose process was still alive."""
    plan = make_plan(tmp_path / "sw", Path(RECIPE), {}, [0, 1], [])
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        job = plan.jobs[0]
        rd = RunDir.create(job.path, "", "x")
        rd.write_run_info({"status": "running", "seed": 0, "pid": live.pid, "host": os.uname().nodename})
        rd.log({"step": 1, "loss": 1.0})
        launched = []

        def launch(plan, job):
            launched.append(job.label)
            out = RunDir.create(job.path, "", "x")
            out.write_run_info({"status": "finished", "seed": job.seed})
            out.write_results({"zeroshot_top1": 0.5})
            return 0

        summary = run_sweep(plan, launch=launch, progress=False)
        assert launched == ["base/seed1"] and summary.busy == ["base/seed0"]
        assert (job.path / "metrics.jsonl").read_text().strip()  # untouched
        assert "still running" in summary.line()
    finally:
        live.kill()
        live.wait()
    summary = run_sweep(plan, launch=launch, progress=False)  # now dead: rerun as before
    assert launched == ["base/seed1", "base/seed0"] and not summary.busy


def test_rerun_continues_an_interrupted_job_from_its_checkpoint(tmp_path):
    from modalab.experiment.sweep import job_command

    plan = make_plan(tmp_path / "sw", Path(RECIPE), {}, [0], [])
    job = plan.jobs[0]
    rd = RunDir.create(job.path, "", "x")
    rd.write_run_info({"status": "interrupted", "seed": 0, "pid": 1, "error": "interrupted by SIGTERM"})
    (job.path / "checkpoints" / "step_00000004").mkdir(parents=True)
    seen = []

    def launch(plan, job):
        seen.append((job.resume, job.path.exists(), job_command(plan, job)[-2:]))
        RunDir(job.path).update_run_info(status="finished")
        RunDir(job.path).write_results({"zeroshot_top1": 0.5})
        return 0

    summary = run_sweep(plan, launch=launch, progress=False)
    assert seen == [(True, True, ["--resume", "--restart"])] and summary.ran == ["base/seed0"]


def _wait(cond, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_sigkill_of_a_sweep_leaves_no_orphan(tmp_path):
    """Before: a SIGKILLed sweep left its child runs alive."""
    out = tmp_path / "sw"
    over = [o for o in TINY if not o.startswith("train.steps")] + ["train.steps=100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen([sys.executable, "-m", "modalab", "sweep", RECIPE, *over, "--seeds", "1",
                              "--out", str(out), "--no-progress"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_json = out / "base" / "seed0" / "run.json"
    metrics = out / "base" / "seed0" / "metrics.jsonl"
    try:
        assert _wait(lambda: metrics.is_file() and '"loss"' in metrics.read_text(), 240)
        child = json.loads(run_json.read_text())["pid"]
        assert pid_alive(child)
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
        assert _wait(lambda: not pid_alive(child), 60)  # the parent-death signal stopped it
        info = json.loads(run_json.read_text())
        assert info["status"] == "interrupted" and "SIGTERM" in info["error"]
    finally:
        if sweep.poll() is None:
            sweep.kill()


def test_liveness_of_a_recorded_pid(tmp_path):
    from modalab.experiment.liveness import run_process_state

    py = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    other = subprocess.Popen(["sleep", "60"])  # a pid reused by a program that is no modalab run
    # Popen returns after fork; until the child has exec'd, its /proc cmdline is still this
    # Python's. Wait for the exec, or the "reused pid" looks like a Python process (a CI flake).
    cmdline = Path(f"/proc/{other.pid}/cmdline")
    deadline = time.monotonic() + 10
    while cmdline.exists() and b"sleep" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert run_process_state({"pid": py.pid}) == "alive"
        assert run_process_state({"pid": other.pid}) == "dead"
        assert run_process_state({"pid": py.pid, "host": "elsewhere"}) == "unknown"
        assert run_process_state({}) == "none"
    finally:
        for p in (py, other):
            p.kill()
            p.wait()
    assert run_process_state({"pid": py.pid}) == "dead"
