"""Subcommands of the experiment layer, added to ``modalab``'s parser by ``cli.py``:
``sweep`` | ``compare`` | ``report`` | ``doctor``."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import signal
import sys
from pathlib import Path



def _sweep_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="modalab sweep", add_help=False)
    p.add_argument("--grid", action="append", default=[])
    p.add_argument("--seeds", type=int)
    p.add_argument("--seed-list")
    p.add_argument("--jobs", type=int)
    p.add_argument("--budget")
    p.add_argument("--metric")
    return p.parse_args(argv)


def cmd_sweep(args: argparse.Namespace) -> int:
    from modalab.experiment.sweep import SweepError, header_args, make_plan, parse_grid, run_sweep

    try:
        return _sweep(args, header_args, make_plan, parse_grid, run_sweep)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _sweep(args, header_args, make_plan, parse_grid, run_sweep) -> int:  # type: ignore[no-untyped-def]
    from modalab.config import load
    from modalab.experiment.sweep import SweepError
    from modalab.recipe_catalog import resolve

    recipe = resolve(args.recipe)  # a file, or a packaged recipe's name
    # the recipe's '# sweep: ...' header gives defaults; command-line values win
    head = _sweep_args(header_args(recipe))
    grid_specs = args.grid or head.grid
    n_seeds = args.seeds or head.seeds or 3
    seed_list = args.seed_list or head.seed_list
    seeds = [int(s) for s in seed_list.split(",")] if seed_list else list(range(n_seeds))
    jobs = args.jobs or head.jobs or 1
    grid = parse_grid(grid_specs)
    overrides = list(args.overrides)
    from modalab.experiment.sweep import expand_grid

    for arm_over in [()] + [expand_grid({k: v[:1]})[0].overrides for k, v in grid.items()]:
        load(recipe, [*overrides, *arm_over])  # fail now on a bad key, not in every job
    if args.dry_run:  # the plan only: arms, their overrides and seeds; nothing is run or written
        arms = expand_grid(grid)
        print(f"dry run: {recipe}: {len(arms)} arm(s) x {len(seeds)} seed(s) = {len(arms) * len(seeds)} runs"
              f"{'; every arm: ' + ' '.join(overrides) if overrides else ''}")
        for arm in arms:
            r = load(recipe, [*overrides, *arm.overrides])
            print(f"  {arm.name}: {' '.join(arm.overrides) or '(no override)'} -> {r.train.steps} steps, "
                  f"batch {r.train.batch_size}")
        print(f"  seeds {seeds}" + (f"; --budget {args.budget or head.budget} is applied when run"
                                    if args.budget or head.budget else ""))
        return 0
    if args.out:
        root = Path(args.out)
    else:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        root = Path("runs") / "sweeps" / f"{recipe.stem}-{stamp}"
    budget = args.budget or head.budget
    args.metric = args.metric or head.metric or "val_zeroshot_top1"
    if budget:
        overrides += _budget_overrides(budget, root, recipe, grid, seeds, overrides, args.metric)
    plan = make_plan(root, recipe, grid, seeds, overrides)
    print(f"sweep {root}: {len(plan.arms)} arm(s) x {len(plan.seeds)} seed(s) = {len(plan.jobs)} runs, "
          f"{jobs} at a time")
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if args.early_stop and args.backend != "ray":
        raise SweepError("--early-stop asha runs through Ray Tune: add --backend ray")
    if args.backend == "ray":
        if args.reuse:
            raise SweepError("--reuse copies runs on this machine: use it with --backend local")
        run_sweep = _ray_runner(args, load(recipe, overrides))
    elif args.reuse:
        run_sweep = functools.partial(run_sweep, reuse=[Path(d) for d in args.reuse])
    try:
        summary = run_sweep(plan, jobs=jobs, retry_failed=args.retry_failed, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\nsweep {root}: interrupted; the same command resumes it (finished runs are kept)",
              file=sys.stderr)
        return 130
    print(f"sweep {root}: {summary.line()}")
    for label in summary.failed:
        print(f"  failed: {label} (log: {root / 'logs' / label.replace('/', '-')}.log)")
    return 1 if summary.failed or getattr(summary, "lost", None) else 0


def _ray_runner(args: argparse.Namespace, base):  # type: ignore[no-untyped-def]
    """``run_sweep`` with the Ray backend's options bound (experiment/ray_backend.py; with
    ``--early-stop asha`` experiment/ray_asha.py, its time axis the base recipe's steps)."""
    from modalab.experiment.ray_backend import run_sweep_ray
    from modalab.experiment.sweep import SweepError

    if args.early_stop == "asha":
        from modalab.experiment.ray_asha import run_sweep_asha

        if base.train.eval_every <= 0 or not args.metric.startswith("val_"):
            raise SweepError(f"--early-stop asha compares validation metrics during training: it needs "
                             f"train.eval_every > 0 (got {base.train.eval_every}) and a val_ metric "
                             f"(got --metric {args.metric})")
        return lambda plan, jobs, retry_failed, progress: run_sweep_asha(
            plan, args.metric, base.train.steps, base.train.eval_every, args.mode, args.cpus_per_trial,
            args.gpus_per_trial, args.address, args.ray_cpus)

    def run(plan, jobs, retry_failed, progress):  # type: ignore[no-untyped-def]
        return run_sweep_ray(plan, address=args.address, cpus_per_trial=args.cpus_per_trial,
                             gpus_per_trial=args.gpus_per_trial, num_cpus=args.ray_cpus,
                             retry_failed=retry_failed, progress=progress)

    return run


def _budget_overrides(budget: str, root: Path, recipe: Path, grid: dict, seeds: list[int],
                      overrides: list[str], metric: str = "val_zeroshot_top1") -> list[str]:
    """``--budget N``: every arm trains N steps; ``--budget converged``: pilot runs of the baseline
    arm pick the step count (experiment/budget.py) on the validation ``metric`` (``--metric``, e.g.
    val_tagging_mAP); both evaluate val ten times along the way."""
    import os
    import subprocess

    from modalab.experiment.budget import find_budget
    from modalab.experiment.sweep import Plan, SweepError, expand_grid

    if budget.isdigit() and int(budget) > 0:
        steps = int(budget)
    elif budget == "converged":
        def pilot(over: list[str], out: Path) -> int:
            out.parent.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            cmd = [sys.executable, "-m", "modalab", "run", str(recipe), "--out", str(out), *over,
                   "run.progress=false", "train.num_threads=1"]
            print(f"budget pilot: {' '.join(over[-3:])}", flush=True)
            with open(f"{out}.log", "w", encoding="utf-8") as fh:
                return subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)

        plan = Plan(root, recipe, grid, seeds, overrides, expand_grid(grid))
        if not metric.startswith("val_"):
            raise SweepError(f"--budget converged reads a validation curve: --metric must name a val_ key, "
                             f"got {metric!r}")
        steps, pilots = find_budget(plan, pilot, metric=metric[len("val_"):])
        print(f"budget: {steps} steps ({'converged' if pilots[-1]['converged'] else 'NOT converged'}: "
              f"{pilots[-1]['reason']}); pilots in {root / 'budget'}")
    else:
        raise SweepError(f"--budget must be 'converged' or a positive step count, got {budget!r}")
    return [f"train.steps={steps}", f"train.eval_every={max(1, steps // 10)}"]


def cmd_compare(args: argparse.Namespace) -> int:
    from modalab.experiment.stats import compare, format_table, write_csv

    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metric = args.metric
        if metric is None:  # a single sweep: the metric its recipe's claim names (its '# metric:' header)
            from modalab.experiment.sweep import sweep_metric

            sweeps = [Path(p) for p in args.paths if (Path(p) / "sweep.json").is_file()]
            metric = sweep_metric(sweeps[0], None) if len(sweeps) == 1 else "zeroshot_top1"
        table = compare([Path(p) for p in args.paths], metric, n_boot=args.bootstrap)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(format_table(table))
    if args.csv:
        write_csv(table, Path(args.csv))
        print(f"csv: {args.csv}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from modalab.experiment.report import write_report, write_sweep_report
    from modalab.experiment.rundir import RunDir

    path = Path(args.path)
    if (path / "sweep.json").is_file():
        from modalab.experiment.sweep import sweep_metric

        print(write_sweep_report(path, sweep_metric(path, args.metric)))
        return 0
    if not (path / "run.json").is_file():
        raise FileNotFoundError(f"{path} is neither a run directory (run.json) nor a sweep (sweep.json)")
    print(write_report(RunDir(path)))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from modalab.experiment.doctor import diagnose, format_findings

    path = Path(args.path)
    if (path / "sweep.json").is_file():
        from modalab.experiment.doctor_sweep import diagnose_sweep

        from modalab.experiment.sweep import sweep_metric

        findings = diagnose_sweep(path, sweep_metric(path, args.metric))
    elif not (path / "run.json").is_file():
        raise FileNotFoundError(f"{path} is neither a run directory (run.json) nor a sweep (sweep.json)")
    else:
        findings = diagnose(path)
    print(format_findings(findings, path))
    return 1 if any(f.severity == "error" for f in findings) else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="run a recipe over a grid of overrides x seeds")
    s.add_argument("recipe", help="path to a YAML recipe (its '# sweep:' header gives default arguments)")
    s.add_argument("overrides", nargs="*", help="key.sub=value overrides applied to every arm")
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a swept key and its values; several --grid make a cartesian product")
    s.add_argument("--seeds", type=int, help="number of seeds 0..N-1 (default 3)")
    s.add_argument("--seed-list", help="explicit seeds, e.g. 0,1,2")
    s.add_argument("--jobs", type=int, help="runs in parallel (bounded by the core count; default 1)")
    s.add_argument("--out", help="sweep directory (default runs/sweeps/<recipe>-<timestamp>); reuse to resume")
    s.add_argument("--budget", help="'converged' (pilot runs of the baseline arm pick the step count at which "
                   "its val curve is within 1 point of its plateau) or an explicit step count")
    s.add_argument("--retry-failed", action="store_true", help="rerun runs that failed before")
    s.add_argument("--reuse", action="append", default=[], metavar="DIR",
                   help="copy a job's run from this sweep (or run) directory instead of training it when that "
                        "finished run has the same resolved recipe, seed, loaded code (its code.json) and machine "
                        "(repeatable; experiment/reuse.py)")
    s.add_argument("--dry-run", action="store_true", help="print the arms (with their steps and batch) and "
                   "seeds, check every arm loads, run nothing")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: subprocesses on this machine (default); ray: Ray tasks (pip install 'modalab[ray]')")
    s.add_argument("--address", help="ray: 'auto' (this machine's cluster) or ray://HOST:PORT; "
                                     "default: a local Ray started in this process")
    s.add_argument("--cpus-per-trial", type=float, default=1, help="ray: CPUs (and torch threads) per trial")
    s.add_argument("--gpus-per-trial", type=float, default=0, help="ray: GPUs per trial")
    s.add_argument("--ray-cpus", type=int, help="ray without --address: CPUs of the local instance")
    s.add_argument("--early-stop", choices=["asha"], help="ray: stop hopeless trials early (Ray Tune's ASHA)")
    s.add_argument("--metric", help="the validation metric that --early-stop compares and --budget converged "
                   "reads (default val_zeroshot_top1; the '# sweep:' header may set it)")
    s.add_argument("--mode", choices=["max", "min"], default="max", help="--early-stop: higher or lower is better")
    s.set_defaults(fn=cmd_sweep)

    c = sub.add_parser("compare", help="mean, std, 95%% CI per arm; paired t / sign-flip tests (Holm), MDE")
    c.add_argument("paths", nargs="+", help="sweep directories or run directories")
    c.add_argument("--metric", help="default: a sweep recipe's '# metric:' header line, else zeroshot_top1")
    c.add_argument("--csv", help="also write the table as CSV here")
    c.add_argument("--bootstrap", type=int, default=4000, help="two-level bootstrap resamples")
    c.set_defaults(fn=cmd_compare)

    r = sub.add_parser("report", help="(re)draw report.html of a run or a sweep directory")
    r.add_argument("path", help="run directory or sweep directory")
    r.add_argument("--metric", help="headline metric of a sweep report (default: the recipe's '# metric:' "
                   "header line, else zeroshot_top1)")
    r.set_defaults(fn=cmd_report)

    d = sub.add_parser("doctor", help="check a run directory for the classic pitfalls, or a sweep for the "
                       "protocol (baseline converged, >= 5 seeds, one commit and machine)")
    d.add_argument("path", help="run directory or sweep directory")
    d.add_argument("--metric", help="metric a sweep's claims rest on (default: the recipe's '# metric:' "
                   "header line, else zeroshot_top1)")
    d.set_defaults(fn=cmd_doctor)
