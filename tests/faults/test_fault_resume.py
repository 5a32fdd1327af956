"""``--resume`` never restarts silently: no valid checkpoint -> refused unless ``--restart``, which
truncates metrics.jsonl and says so; a run whose process is alive is never resumed."""

import json
import shutil
import subprocess
import sys

from fault_helpers import RECIPE, TINY, final_weights, losses, same_weights

from modalab.cli import main


def _copy(reference_run, tmp_path, status="interrupted", **info):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    (run / "results.json").unlink()
    data = json.loads((run / "run.json").read_text())
    data.update(status=status, error="KeyboardInterrupt: earlier attempt", **info)
    (run / "run.json").write_text(json.dumps(data))
    return run


def test_resume_with_every_checkpoint_corrupt_refuses_then_restart_truncates(tmp_path, reference_run, capsys):
    """Before: it restarted at step 0 in the same folder and appended to the old metrics.jsonl."""
    run = _copy(reference_run, tmp_path)
    for f in run.glob("checkpoints/step_*/model.safetensors"):
        f.write_bytes(f.read_bytes()[:100])
    metrics_before = (run / "metrics.jsonl").read_text()
    assert main(["run", RECIPE, "--out", str(run), "--resume", *TINY]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "truncated or corrupted" in err and "--restart" in err
    assert (run / "metrics.jsonl").read_text() == metrics_before  # nothing touched
    assert main(["run", RECIPE, "--out", str(run), "--resume", "--restart", *TINY]) == 0
    err = capsys.readouterr().err
    assert "metrics.jsonl truncated" in err and "checkpoints.before-restart-" in err
    steps = [s for s, _ in losses(run)]
    assert steps == sorted(set(steps))  # each step logged once
    assert same_weights(final_weights(reference_run), final_weights(run))
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and "error" not in info
    assert list(run.glob("checkpoints.before-restart-*/step_*"))  # the corrupt ones kept aside


def test_resume_before_the_first_checkpoint_refuses(tmp_path, reference_run, capsys):
    run = _copy(reference_run, tmp_path)
    shutil.rmtree(run / "checkpoints")
    assert main(["run", RECIPE, "--out", str(run), "--resume", *TINY]) == 2
    assert "wrote no checkpoint" in capsys.readouterr().err


def test_resume_of_a_live_run_refuses(tmp_path, reference_run, capsys):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = _copy(reference_run, tmp_path, status="running", pid=live.pid)
        assert main(["run", RECIPE, "--out", str(run), "--resume", *TINY]) == 2
        assert f"still in progress (pid {live.pid}" in capsys.readouterr().err
        assert not (run / "results.json").exists()
    finally:
        live.kill()
        live.wait()
