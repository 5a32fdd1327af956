"""``modalab sweep``: a grid of arms x seeds, each a normal run directory under one sweep directory.

```
<sweep>/
  sweep.json                 recipe, grid, seeds, common overrides, arms, runs (the plan)
  <arm>/seed<k>/             a normal ``modalab run`` directory (run.json, results.json, ...)
  logs/<arm>-seed<k>.log     stdout/stderr of that run's process
```

Each run is its own ``python -m modalab run`` process (``OMP_NUM_THREADS=1``), so runs are
isolated and a crash affects one run. Resuming is reading the run directories: a run whose
``run.json`` says ``finished`` (and has ``results.json``) is never redone; one that ``failed`` is
reported and rerun only with ``retry_failed``; one left ``running`` by an interrupted sweep, or
never started, is (re)run from scratch, or continued with ``--resume`` when it left a checkpoint
(a job stopped by a signal writes one) — unless its recorded process is still alive: a live run's
folder is never deleted. Each job runs in its own session and gets SIGTERM when the sweep process
dies (Linux parent-death signal), so a killed sweep leaves no orphans.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tqdm.auto import tqdm

from modalab.experiment.liveness import run_process_state
from modalab.experiment.rundir import now_iso
from modalab.experiment.signals import PARENT_ENV
from modalab.experiment.store import Store, store_path
from modalab.experiment.sweep_grid import (  # noqa: F401  (re-exported: the grid is part of a sweep)
    Arm, SweepError, expand_grid, linked_values, parse_grid, split_values,
)
from modalab.train.checkpoint import atomic_write_text

SWEEP_FILE = "sweep.json"
HEADER_RE = re.compile(r"^#\s*sweep:\s*(.+)$")


@dataclass(frozen=True)
class Job:
    arm: Arm
    seed: int
    path: Path  # the run directory
    resume: bool = False  # continue an interrupted run from its checkpoint (run --resume --restart)

    @property
    def label(self) -> str:
        return f"{self.arm.name}/seed{self.seed}"


def header_args(recipe: Path) -> list[str]:
    """Default ``modalab sweep`` arguments from a ``# sweep: --grid ... --seeds 3`` header line."""
    for line in recipe.read_text(encoding="utf-8").splitlines():
        m = HEADER_RE.match(line.strip())
        if m:
            return shlex.split(m.group(1))
        if line.strip() and not line.startswith("#"):
            break
    return []


def header_metric(recipe: Path, default: str = "zeroshot_top1") -> str:
    """The metric a recipe's claim rests on: its ``# metric: NAME`` header line, else ``default``."""
    for line in Path(recipe).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line.lstrip("#").strip().partition(":")
        if key.strip() == "metric" and value.strip():
            return value.strip()
    return default


def sweep_metric(root: Path, given: str | None) -> str:
    """``given``, else the ``# metric:`` header of the sweep's recipe (``zeroshot_top1`` without one)."""
    if given:
        return given
    try:
        return header_metric(load_plan(root).recipe)
    except (FileNotFoundError, OSError, ValueError, KeyError):
        return "zeroshot_top1"


@dataclass
class Plan:
    root: Path
    recipe: Path
    grid: dict[str, list[str]]
    seeds: list[int]
    overrides: list[str]
    arms: list[Arm]

    @property
    def jobs(self) -> list[Job]:
        return [Job(a, s, self.root / a.name / f"seed{s}") for a in self.arms for s in self.seeds]

    def to_json(self) -> dict:
        return {
            "recipe": str(self.recipe),
            "grid": self.grid,
            "seeds": self.seeds,
            "overrides": self.overrides,
            "arms": [{"name": a.name, "overrides": list(a.overrides), "params": a.params} for a in self.arms],
            "runs": [
                {"arm": j.arm.name, "seed": j.seed, "dir": str(j.path.relative_to(self.root))} for j in self.jobs
            ],
        }

    @property
    def snapshot(self) -> Path:
        """The resolved recipe every job runs (edits to the original cannot change a sweep midway)."""
        return self.root / "recipe.yaml"

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.snapshot.is_file():
            from modalab.config import load

            atomic_write_text(self.snapshot, load(self.recipe).to_yaml())
        f = self.root / SWEEP_FILE
        created = json.loads(f.read_text()).get("created") if f.is_file() else None
        atomic_write_text(f, json.dumps({**self.to_json(), "created": created or now_iso()}, indent=2))


def make_plan(
    root: Path, recipe: Path, grid: dict[str, list[str]], seeds: list[int], overrides: list[str]
) -> Plan:
    """A new plan, or the same plan again; a different plan for an existing sweep is an error."""
    plan = Plan(Path(root), Path(recipe), grid, seeds, list(overrides), expand_grid(grid))
    f = plan.root / SWEEP_FILE
    if f.is_file():
        old = json.loads(f.read_text())
        new = plan.to_json()
        diff = [k for k in ("recipe", "grid", "overrides") if old.get(k) != new[k]]
        if diff:
            raise SweepError(
                f"{f} describes a different sweep ({', '.join(diff)} differ: {old.get(diff[0])!r} vs "
                f"{new[diff[0]]!r}); use another --out or the same arguments to resume"
            )
        plan.seeds = sorted(set(old.get("seeds", [])) | set(seeds))  # more seeds extend a sweep
    return plan


def load_plan(root: Path) -> Plan:
    f = Path(root) / SWEEP_FILE
    if not f.is_file():
        raise SweepError(f"{root} is not a sweep directory (no {SWEEP_FILE})")
    d = json.loads(f.read_text())
    arms = [Arm(a["name"], tuple(a["overrides"]), a.get("params", {})) for a in d["arms"]]
    return Plan(Path(root), Path(d["recipe"]), d["grid"], d["seeds"], d["overrides"], arms)


def base_config_text(plan: Plan) -> str:
    """The sweep's resolved base recipe (its snapshot, else the first run's config.yaml)."""
    for f in [plan.snapshot, *(j.path / "config.yaml" for j in plan.jobs)]:
        if f.is_file():
            return f.read_text(encoding="utf-8")
    return ""


def run_status(path: Path) -> str:
    """``finished`` | ``failed`` | ``incomplete`` (started, never ended) | ``pending``."""
    info_f = path / "run.json"
    if not info_f.is_file():
        return "incomplete" if path.exists() else "pending"
    try:
        info = json.loads(info_f.read_text())
        status = info.get("status")
    except json.JSONDecodeError:
        return "incomplete"
    if status == "finished" and (path / "results.json").is_file():
        return "finished"
    if status == "failed" and not str(info.get("error", "")).startswith("KeyboardInterrupt"):
        return "failed"
    return "incomplete"  # still running, killed, or interrupted by Ctrl-C


def job_overrides(plan: Plan, job: Job) -> list[str]:
    """The overrides a job's run gets on top of the sweep's recipe snapshot."""
    return [*plan.overrides, *job.arm.overrides, f"run.seed={job.seed}", "run.progress=false", "train.num_threads=1"]


def job_command(plan: Plan, job: Job) -> list[str]:
    return [
        sys.executable, "-m", "modalab", "run", str(plan.snapshot), "--out", str(job.path),
        *job_overrides(plan, job), *(["--resume", "--restart"] if job.resume else []),
    ]


_ACTIVE: set[subprocess.Popen] = set()
_LOCK = threading.Lock()
_STOPPING = threading.Event()


def launch_subprocess(plan: Plan, job: Job) -> int:
    """Run one job as ``python -m modalab run`` with one thread; return its exit code."""
    log = plan.root / "logs" / f"{job.arm.name}-seed{job.seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    # its own session (a Ctrl-C in the terminal reaches the sweep, which stops the jobs cleanly),
    # and a parent-death signal: the job gets SIGTERM if the sweep dies (experiment/signals.py)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", PARENT_ENV: str(os.getpid())}
    with open(log, "w", encoding="utf-8") as fh:
        p = subprocess.Popen(job_command(plan, job), stdout=fh, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        with _LOCK:
            _ACTIVE.add(p)
        try:
            return p.wait()
        finally:
            with _LOCK:
                _ACTIVE.discard(p)


def _stop_children() -> None:
    _STOPPING.set()
    with _LOCK:
        for p in list(_ACTIVE):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)


@dataclass
class SweepSummary:
    finished: list[str] = field(default_factory=list)  # finished before this call
    ran: list[str] = field(default_factory=list)  # finished in this call
    failed: list[str] = field(default_factory=list)  # failed (this call or before, not retried)
    busy: list[str] = field(default_factory=list)  # still running in another process: left alone
    reused: list[str] = field(default_factory=list)  # copied from another sweep (experiment/reuse.py)

    def line(self) -> str:
        busy = f", {len(self.busy)} still running elsewhere (left alone)" if self.busy else ""
        reused = f", {len(self.reused)} reused from --reuse" if self.reused else ""
        return (
            f"{len(self.finished) + len(self.ran) + len(self.reused)} finished ({len(self.ran)} run now, "
            f"{len(self.finished)} already done{reused}), {len(self.failed)} failed{busy}"
        )


def run_sweep(
    plan: Plan,
    jobs: int = 1,
    retry_failed: bool = False,
    launch: Callable[[Plan, Job], int] = launch_subprocess,
    progress: bool = True,
    reuse: Sequence[Path] = (),
) -> SweepSummary:
    """Run every job of ``plan`` not finished yet, ``jobs`` at a time (at most the core count); a job
    that a finished run under ``reuse`` reproduces exactly is copied instead (experiment/reuse.py)."""
    with sweep_lock(plan.root):
        return _run_locked(plan, jobs, retry_failed, launch, progress, reuse)


@contextlib.contextmanager
def sweep_lock(root: Path) -> Iterator[None]:
    """One sweep process per directory (every backend): a second one is an error."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(f"another modalab sweep is running in {root}; wait for it or stop it") from None
        yield


def pending_jobs(plan: Plan, retry_failed: bool, summary: SweepSummary) -> list[Job]:
    """Jobs still to run (every backend): finished, failed-not-retried and live runs go to ``summary``."""
    todo: list[Job] = []
    for job in plan.jobs:
        st = run_status(job.path)
        kept = (summary.finished if st == "finished" else summary.failed if st == "failed" and not retry_failed
                else summary.busy if _alive(job.path) else None)
        if kept is None:
            todo.append(job)
        else:
            kept.append(job.label)
    for labels, what in ((summary.busy, "run(s) still running in another process, not touched"),
                         (summary.failed, "failed run(s) not retried (use --retry-failed)")):
        if labels:
            print(f"sweep: {len(labels)} {what}: {', '.join(labels)}", file=sys.stderr)
    return todo


def _run_locked(
    plan: Plan, jobs: int, retry_failed: bool, launch: Callable[[Plan, Job], int], progress: bool,
    reuse: Sequence[Path] = (),
) -> SweepSummary:
    plan.save()
    _STOPPING.clear()
    summary = SweepSummary()
    todo = pending_jobs(plan, retry_failed, summary)
    if reuse:
        from modalab.experiment.reuse import take_reusable

        todo = take_reusable(plan, todo, reuse, summary)
    workers = max(1, min(jobs, os.cpu_count() or 1, len(todo) or 1))
    bar = tqdm(total=len(plan.jobs), initial=len(summary.finished) + len(summary.reused), desc="sweep", unit="run",
               disable=not progress)

    def one(job: Job) -> None:
        if job.path.exists():
            if _alive(job.path):  # never delete a live run's folder (checked again just before)
                summary.busy.append(job.label)
                return
            if run_status(job.path) == "incomplete" and any((job.path / "checkpoints").glob("step_*")):
                job = replace(job, resume=True)  # interrupted with a checkpoint: continue it
            else:
                shutil.rmtree(job.path)  # a partial run without a checkpoint (or a failed one) starts over
        rc = launch(plan, job)
        if _STOPPING.is_set():
            return  # interrupted: left incomplete, rerun on resume
        if run_status(job.path) == "finished":
            summary.ran.append(job.label)
        else:
            summary.failed.append(job.label)
            _mark_failed(job.path, rc, plan.root / "logs" / f"{job.arm.name}-seed{job.seed}.log")
        with _LOCK:  # one writer at a time into the sweep's results store
            store.index_run(job.path, str(plan.root.resolve()), job.arm.name, job.arm.params)
        bar.update(1)
        bar.set_postfix(failed=len(summary.failed), last=job.label)

    store = Store(store_path(plan.root))
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for fut in [pool.submit(one, j) for j in todo]:
            fut.result()
    except BaseException:  # interrupted: stop the running jobs; they stay "incomplete"
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_children()
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()
        store.close()
    return summary


def _alive(path: Path) -> bool:
    """Whether the run in ``path`` says ``running`` and its recorded process is alive (or on
    another machine, where it cannot be checked)."""
    try:
        info = json.loads((path / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(info, dict) and info.get("status") == "running" \
        and run_process_state(info) in ("alive", "unknown")


def _mark_failed(path: Path, rc: int, log: Path) -> None:
    """Record a run that died without saying so (killed, OOM) as failed, with its exit code."""
    info_f = path / "run.json"
    info = json.loads(info_f.read_text()) if info_f.is_file() else {}
    if info.get("status") != "failed":
        info.update(status="failed", ended=now_iso(), error=info.get("error") or f"exit code {rc}; see {log}")
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(info_f, json.dumps(info, indent=2))
