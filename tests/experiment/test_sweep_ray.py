"""``modalab sweep --backend ray`` on a local 2-CPU Ray: the same results and store rows as the
local backend for the same seeds, and a killed trial worker is the only trial a rerun redoes.

Ray is the ``[ray]`` extra (a 79 MB wheel), not part of ``[test]``: these tests skip without it,
and are slow (each starts Ray and 4+ runs)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modalab.experiment.store import Store, store_path
from modalab.experiment.sweep import make_plan, parse_grid, run_status, run_sweep

pytest.importorskip("ray", reason="Ray is not installed (pip install 'modalab[ray]')")
pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml"
TINY = [
    "model.vision.width=16", "model.vision.depth=1", "model.text.width=16", "model.text.depth=1",
    "model.embed_dim=16", "train.steps=6", "train.batch_size=32", "train.log_every=2",
    "optim.warmup_steps=1", "eval.batch_size=512",
]
GRID = ["loss.temperature=0.05,0.1"]
TIMING = {"wall_seconds", "train_seconds", "samples_per_s", "steps_per_s"}


def _plan(root: Path, extra: list[str] = ()):
    return make_plan(root, RECIPE, parse_grid(GRID), [0, 1], [*TINY, *extra])


def _rows(root: Path) -> dict:
    """(arm, seed) -> (status, params, final metrics without timings, loss curve)."""
    with Store(store_path(root)) as st:
        out = {}
        for r in st.runs(str(root.resolve())):
            finals = {k: v for k, v in st.db.execute("SELECT key, value FROM final_metrics WHERE run_id = ?",
                                                     (r["run_id"],)).fetchall() if k not in TIMING}
            out[(r["arm"], r["seed"])] = (r["status"], r["params"], finals, st.curve(r["run_id"], "loss"))
        return out


def test_ray_backend_matches_the_local_backend(tmp_path):
    from modalab.experiment.ray_backend import run_sweep_ray

    local = run_sweep(_plan(tmp_path / "local"), jobs=2, progress=False)
    ray_sum = run_sweep_ray(_plan(tmp_path / "ray"), num_cpus=2, progress=False)
    assert len(local.ran) == len(ray_sum.ran) == 4 and not ray_sum.failed and not ray_sum.lost
    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert set(a) == set(b) and len(a) == 4
    for key in a:
        assert a[key][:2] == b[key][:2] == ("finished", a[key][1])
        assert a[key][2] == b[key][2], key  # every final metric, bit for bit (1 thread each)
        assert a[key][3] == b[key][3] and len(a[key][3]) == 3
    for arm_dir in (tmp_path / "ray").glob("temperature-*"):
        for seed_dir in arm_dir.glob("seed*"):
            assert {"config.yaml", "run.json", "metrics.jsonl", "results.json", "report.html"} <= {
                p.name for p in seed_dir.iterdir()}


def test_killed_trial_worker_is_the_only_trial_redone(tmp_path):
    root = tmp_path / "sw"
    cmd = [sys.executable, "-m", "modalab", "sweep", str(RECIPE), *TINY, "train.steps=40", *sum(
        (["--grid", g] for g in GRID), []), "--seed-list", "0,1", "--backend", "ray", "--ray-cpus", "2",
           "--out", str(root), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    victim = None
    deadline = time.time() + 300
    while victim is None and time.time() < deadline and proc.poll() is None:
        for info_f in sorted(root.glob("*/seed*/run.json")):
            info = json.loads(info_f.read_text() or "{}")
            if info.get("status") == "running" and info.get("pid"):
                victim = info_f.parent
                os.kill(info["pid"], signal.SIGKILL)  # the Ray worker that runs this trial
                break
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=600)
    assert victim is not None, out
    assert proc.returncode == 1 and "worker lost" in out and "1 lost" in out, out
    assert run_status(victim) == "incomplete"
    others = [p for p in root.glob("*/seed*") if p != victim]
    assert len(others) == 3 and all(run_status(p) == "finished" for p in others)
    stamps = {p: (p / "results.json").stat().st_mtime_ns for p in others}

    from modalab.experiment.ray_backend import run_sweep_ray
    from modalab.experiment.sweep import load_plan

    again = run_sweep_ray(load_plan(root), num_cpus=2, progress=False)
    label = f"{victim.parent.name}/{victim.name}"
    assert again.ran == [label] and len(again.finished) == 3 and not again.lost
    assert run_status(victim) == "finished"
    assert {p: (p / "results.json").stat().st_mtime_ns for p in others} == stamps  # never redone
    rows = _rows(root)
    assert len(rows) == 4 and all(r[0] == "finished" for r in rows.values())


def test_asha_stops_trials_records_them_and_never_redoes_them(tmp_path):
    root = tmp_path / "sw"
    base = ["sweep", str(RECIPE), *[t for t in TINY if not t.startswith("train.steps")], "train.steps=40",
            "train.eval_every=10", "--grid", "optim.lr=0.003,0.000001", "--seed-list", "0,1", "--backend", "ray",
            "--ray-cpus", "2", "--early-stop", "asha", "--metric", "val_zeroshot_top1", "--out", str(root),
            "--no-progress"]
    first = subprocess.run([sys.executable, "-m", "modalab", *base], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    stopped = [p for p in root.glob("*/seed*") if json.loads((p / "run.json").read_text())["status"] == "stopped"]
    finished = [p for p in root.glob("*/seed*") if run_status(p) == "finished"]
    assert stopped and finished and len(stopped) + len(finished) == 4, first.stdout
    assert f"{len(stopped)} stopped early" in first.stdout
    for p in stopped:
        early = json.loads((p / "run.json").read_text())["early_stop"]
        assert early["scheduler"] == "asha" and early["metric"] == "val_zeroshot_top1"
        assert early["step"] in (10, 20, 30) and not (p / "results.json").exists()
    with Store(store_path(root)) as st:
        statuses = sorted(r["status"] for r in st.runs(str(root.resolve())))
    assert statuses == sorted(["stopped"] * len(stopped) + ["finished"] * len(finished))
    again = subprocess.run([sys.executable, "-m", "modalab", *base], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and f"({0} run now, {len(finished)} already done)" in again.stdout, again.stdout
    bad = subprocess.run([sys.executable, "-m", "modalab", *base[:base.index("--backend")], "--early-stop", "asha",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "add --backend ray" in bad.stderr
