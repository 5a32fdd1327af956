"""Interrupted runs: SIGTERM, SIGINT and SIGHUP stop at a step boundary with a checkpoint and
status "interrupted"; SIGKILL leaves the last periodic checkpoint. Every case resumes to final
weights bit-identical to an uninterrupted run, and the finished run carries no old error."""

import json
import os
import random
import signal
import subprocess
import sys

import pytest
from fault_helpers import RECIPE, TINY, final_weights, losses, same_weights

import modalab.experiment.runner as R
from modalab.cli import main
from tests.train.kill_helpers import KILLER


def _signal_at(monkeypatch, signum: int, at: int) -> None:
    """Make the process send itself ``signum`` right after optimizer step ``at`` (1-based)."""
    fit = R.fit

    def fit_with_signal(*a, **k):
        after = k["after_step"]

        def hook(step):
            out = after(step)
            if step + 1 == at:
                os.kill(os.getpid(), signum)
            return out

        k["after_step"] = hook
        return fit(*a, **k)

    monkeypatch.setattr(R, "fit", fit_with_signal)


# random steps (TINY trains 12 steps, checkpoints every 4); the step is in the test id
_RNG = random.Random(os.getpid())
STOPS = list(zip((signal.SIGTERM, signal.SIGINT, signal.SIGHUP), _RNG.sample(range(1, 12), 3)))
KILL_AT = _RNG.choice([5, 6, 7, 9, 10, 11])  # after a periodic checkpoint (4 or 8), before the end


@pytest.mark.parametrize("sig,at", STOPS, ids=[f"{signal.Signals(s).name}-step{a}" for s, a in STOPS])
def test_signal_stops_at_a_step_with_checkpoint_and_resume_is_bit_identical(
        tmp_path, monkeypatch, reference_run, capsys, sig, at):
    run = tmp_path / "run"
    _signal_at(monkeypatch, sig, at)
    assert main(["run", RECIPE, "--out", str(run), *TINY]) == 128 + sig
    assert "interrupted" in capsys.readouterr().err
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and info["ended"]
    assert signal.Signals(sig).name in info["error"] and f"step_{at:08d}" in info["error"]
    assert (run / "checkpoints" / f"step_{at:08d}").is_dir()  # saved at the step it stopped
    assert not (run / "results.json").exists()
    monkeypatch.undo()
    assert main(["run", RECIPE, "--out", str(run), "--resume", *TINY]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and "error" not in info  # the old error is cleared
    assert info["resumed_from"] == f"step_{at:08d}"
    assert same_weights(final_weights(reference_run), final_weights(run))  # bit-identical
    assert losses(run) == losses(reference_run)  # no step lost, none logged twice




def test_sigkill_then_resume_is_bit_identical_and_doctor_flags_the_stale_run(tmp_path, reference_run):
    from modalab.experiment.doctor import diagnose

    run = tmp_path / "killed"
    p = subprocess.run([sys.executable, "-c", KILLER, str(KILL_AT), "run", RECIPE, "--out", str(run), *TINY],
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "running"  # what a killed run leaves behind
    stale = [f for f in diagnose(run) if f.check == "stale_run"]
    assert stale and stale[0].severity == "error" and str(info["pid"]) in stale[0].evidence
    assert main(["run", RECIPE, "--out", str(run), "--resume", *TINY]) == 0
    last = KILL_AT // 4 * 4  # the newest periodic checkpoint before the kill
    assert json.loads((run / "run.json").read_text())["resumed_from"] == f"step_{last:08d}", KILL_AT
    assert same_weights(final_weights(reference_run), final_weights(run))
    assert losses(run) == losses(reference_run)
    assert not [f for f in diagnose(run) if f.check == "stale_run"]
