"""``modalab sweep ... --backend ray --early-stop asha --metric val_zeroshot_top1``: the sweep's
trials as Ray Tune trials under the ASHA scheduler, which stops hopeless ones early.

Each trial runs ``modalab run`` in its Tune actor (a fresh process per trial) and reports the
validation metric to Tune at every ``train.eval_every`` step (``step`` is ASHA's time axis, the
first evaluation its grace period, ``train.steps`` its horizon). When the sweep ends, a trial ASHA
stopped is recorded as stopped: ``run.json`` gets ``status: stopped`` and ``early_stop`` (scheduler,
metric, last step and value) and the store indexes it with that status. A rerun with
``--early-stop asha`` never redoes a finished or stopped trial; other rules as the Ray backend's.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from typing import Any

from modalab.experiment.ray_backend import RaySummary, run_trial, trial_args
from modalab.experiment.rundir import now_iso
from modalab.experiment.store import Store, store_path
from modalab.experiment.sweep import Job, Plan, SweepError, _mark_failed, run_status
from modalab.train.checkpoint import atomic_write_text


def _trainable(config: dict[str, Any]) -> None:
    """Tune's function trainable: one modalab run, reporting ``metric`` at each evaluation."""
    from ray import tune

    from modalab.experiment.loggers import add_sink

    job = config["job"]
    metric = job["metric"]

    def sink(rec: dict[str, Any]) -> None:
        if isinstance(rec.get(metric), (int, float)) and isinstance(rec.get("step"), int):
            tune.report({metric: float(rec[metric]), "step": rec["step"]})

    remove = add_sink(sink)
    try:
        rc = run_trial(job["args"], job["log"], job["threads"])
    finally:
        remove()
    if rc != 0:
        raise RuntimeError(f"modalab run exited with {rc}; see {job['log']}")


def _status(path: Any) -> str:
    info_f = path / "run.json"
    if info_f.is_file():
        try:
            if json.loads(info_f.read_text()).get("status") == "stopped":
                return "stopped"
        except json.JSONDecodeError:
            pass
    return run_status(path)


def run_sweep_asha(plan: Plan, metric: str, steps: int, grace: int, mode: str = "max",
                   cpus_per_trial: float = 1, gpus_per_trial: float = 0, address: str | None = None,
                   num_cpus: int | None = None, reduction_factor: float = 2) -> RaySummary:
    """Run the not-yet-done jobs of ``plan`` as Tune trials under ASHA; see the module docstring."""
    try:
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
    except ImportError:
        raise SweepError("--early-stop asha needs Ray Tune: pip install 'modalab[ray]'") from None
    plan = replace(plan, root=plan.root.resolve())  # Tune actors start in their own directories
    summary = RaySummary()
    todo: list[Job] = []
    stopped: list[str] = []
    for job in plan.jobs:
        st = _status(job.path)
        if st == "finished":
            summary.finished.append(job.label)
        elif st == "stopped":
            stopped.append(job.label)
        elif st != "failed":
            todo.append(job)
        else:
            summary.failed.append(job.label)
    plan.save()
    if not todo:
        summary.stopped = stopped
        return summary
    threads = max(1, int(cpus_per_trial))
    by_label = {j.label: j for j in todo}
    space = [{"label": j.label, "args": trial_args(plan, j, threads), "threads": threads, "metric": metric,
              "log": str(plan.root / "logs" / f"{j.arm.name}-seed{j.seed}.log")} for j in todo]
    for j in todo:
        if j.path.exists():
            shutil.rmtree(j.path)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(_trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial}),
            param_space={"job": tune.grid_search(space)},
            tune_config=tune.TuneConfig(
                scheduler=ASHAScheduler(time_attr="step", max_t=steps, grace_period=grace,
                                        reduction_factor=reduction_factor),
                metric=metric, mode=mode, reuse_actors=False),
            run_config=tune.RunConfig(name="asha", storage_path=str(plan.root / "tune"), verbose=0),
        )
        grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    with Store(store_path(plan.root)) as store:
        for res in grid:
            job = by_label[res.config["job"]["label"]]
            last = res.metrics or {}
            if run_status(job.path) == "finished":
                summary.ran.append(job.label)
            elif res.error is None:  # ended without finishing or failing: ASHA stopped it
                info_f = job.path / "run.json"
                info = json.loads(info_f.read_text()) if info_f.is_file() else {}
                info.update(status="stopped", ended=now_iso(), early_stop={
                    "scheduler": "asha", "metric": metric, "mode": mode, "step": last["step"],
                    "value": last.get(metric)})
                atomic_write_text(info_f, json.dumps(info, indent=2))
                stopped.append(job.label)
            else:
                summary.failed.append(job.label)
                _mark_failed(job.path, 1, plan.root / "logs" / f"{job.arm.name}-seed{job.seed}.log")
            store.index_run(job.path, str(plan.root.resolve()), job.arm.name, job.arm.params)
    summary.stopped = stopped
    if stopped:
        print(f"sweep: ASHA stopped {len(stopped)} trial(s) early: {', '.join(stopped)}", file=sys.stderr)
    return summary
