"""``modalab sweep ... --backend ray``: the same sweep, scheduled by Ray (the ``[ray]`` extra).

Each job of the plan is one Ray task with ``num_cpus=cpus_per_trial`` and
``num_gpus=gpus_per_trial``; Ray places it on a node with those resources free (and sets
``CUDA_VISIBLE_DEVICES``). The task runs ``modalab run`` inside its worker process, which serves
that one trial (``max_calls=1``): a fresh process per trial, as with the local backend, so a
killed worker takes exactly its own trial with it.

Every trial is a normal run directory under the sweep directory, written by the worker, so on a
cluster the sweep directory must be on a filesystem every node mounts at the same path. The
driver (this process) decides what to run by reading the run directories, exactly like the local
backend: finished runs are never redone, failed ones only with ``retry_failed``, and a run whose
worker died (``WorkerCrashedError``, a lost node) is left incomplete and redone by the next call.
The driver indexes every ended run in the sweep's SQLite store.

``address``: ``None`` starts a local Ray instance in this process (``num_cpus`` caps it);
``"auto"`` joins the cluster this machine belongs to; ``"ray://HOST:PORT"`` a remote one.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from modalab.experiment.store import Store, store_path
from modalab.experiment.sweep import (
    Job, Plan, SweepError, SweepSummary, _mark_failed, job_command, pending_jobs, run_status, sweep_lock,
)


@dataclass
class RaySummary(SweepSummary):
    lost: list[str] = field(default_factory=list)  # worker died: incomplete, redone next time
    stopped: list[str] = field(default_factory=list)  # stopped early by ASHA (experiment/ray_asha.py)

    def line(self) -> str:
        return (super().line() + (f", {len(self.stopped)} stopped early" if self.stopped else "")
                + (f", {len(self.lost)} lost (rerun to redo)" if self.lost else ""))


def trial_args(plan: Plan, job: Job, threads: int) -> list[str]:
    """``modalab run`` arguments of one trial: the local backend's command, with ``threads``
    intra-op threads (the trial's CPUs)."""
    cmd = job_command(plan, job)
    args = cmd[cmd.index("run"):]  # drop "python -m modalab"
    return [a if a != "train.num_threads=1" else f"train.num_threads={threads}" for a in args]


def run_trial(args: list[str], log: str, threads: int) -> int:
    """Body of one Ray task: ``modalab run ARGS`` in this worker, output to ``log``; exit code."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    from modalab.cli import main

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as fh:
        fd_out, fd_err = os.dup(1), os.dup(2)
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            return int(main(args) or 0)
        except SystemExit as e:
            return int(e.code or 0)
        except BaseException as e:  # the run recorded itself as failed; say why in the log
            print(f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(fd_out, 1)
            os.dup2(fd_err, 2)


def run_sweep_ray(
    plan: Plan,
    address: str | None = None,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    num_cpus: int | None = None,
    retry_failed: bool = False,
    progress: bool = True,
) -> RaySummary:
    """Run every job of ``plan`` not finished yet as Ray tasks; same directory layout, store and
    resume rules as :func:`modalab.experiment.sweep.run_sweep`."""
    try:
        import ray
    except ImportError:
        raise SweepError("--backend ray needs Ray: pip install 'modalab[ray]' (or ray[tune])") from None
    if cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise SweepError(f"--cpus-per-trial must be > 0 and --gpus-per-trial >= 0, got "
                         f"{cpus_per_trial} and {gpus_per_trial}")
    plan = replace(plan, root=plan.root.resolve())  # workers may start in another directory
    with sweep_lock(plan.root):
        started = False
        try:
            if not ray.is_initialized():
                init: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False}
                if address is None and num_cpus is not None:
                    init["num_cpus"] = num_cpus
                ray.init(**init)
                started = True
            return _run(ray, plan, cpus_per_trial, gpus_per_trial, retry_failed, progress)
        finally:
            if started:
                ray.shutdown()


def _run(ray: Any, plan: Plan, cpus: float, gpus: float, retry_failed: bool, progress: bool) -> RaySummary:
    from ray.exceptions import RayError

    plan.save()
    summary = RaySummary()
    todo = pending_jobs(plan, retry_failed, summary)
    threads = max(1, int(cpus))
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1, max_retries=0)(run_trial)
    logs = {j.label: plan.root / "logs" / f"{j.arm.name}-seed{j.seed}.log" for j in todo}
    refs = {}
    for job in todo:
        if job.path.exists():
            shutil.rmtree(job.path)  # a partial run starts over; metrics.jsonl is append-only
        refs[task.remote(trial_args(plan, job, threads), str(logs[job.label]), threads)] = job
    bar = tqdm(total=len(plan.jobs), initial=len(summary.finished), desc="sweep (ray)", unit="run",
               disable=not progress)
    with Store(store_path(plan.root)) as store:
        try:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                job = refs[done[0]]
                try:
                    rc = ray.get(done[0])
                except RayError as e:  # the worker died (killed, node lost): left incomplete
                    summary.lost.append(job.label)
                    print(f"sweep: {job.label}: worker lost ({type(e).__name__}); rerun the sweep to redo it",
                          file=sys.stderr)
                    bar.update(1)
                    continue
                if run_status(job.path) == "finished":
                    summary.ran.append(job.label)
                else:
                    summary.failed.append(job.label)
                    _mark_failed(job.path, rc, logs[job.label])
                store.index_run(job.path, str(plan.root.resolve()), job.arm.name, job.arm.params)
                bar.update(1)
                bar.set_postfix(failed=len(summary.failed), last=job.label)
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()
    return summary
