"""``modalab run``: one recipe, one run directory, read top to bottom.

processes (torchrun env, if any) -> seed -> run directory (rank 0 decides) -> task (data,
tokenizer, model, objective) -> device, gradient checkpointing, same start on every rank ->
stage 0 and its optimizer -> resume from the latest valid checkpoint (``resume=True``) ->
training loop (metrics.jsonl, periodic evaluation, checkpoints) -> final checkpoint ->
evaluation -> results.json -> report.html. Only rank 0 writes files or shows progress.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from modalab import registry
from modalab.config import ConfigError, Recipe
from modalab.errors import ResumeError, clip
from modalab.experiment.code_record import CODE_FILE, code_record
from modalab.experiment.eval_splits import eval_split, split_keys
from modalab.experiment.loggers import Loggers
from modalab.experiment.prerequisites import resolve as resolve_prerequisites
from modalab.experiment.report import write_report
from modalab.experiment.resume import prepare_resume
from modalab.experiment.resume import restore as _restore
from modalab.experiment.rundir import ReadOnlyRunDir, RunDir, git_commit, git_dirty, machine_info, now_iso, text_hash
from modalab.experiment.signals import Interrupted, StopSignals
from modalab.experiment.speed import Speed, setup_speed
from modalab.experiment.threads import oversubscribed, threads_per_process
from modalab.tasks.base import Task, TwoOptimizers, implements, missing_members
from modalab.train import dist as D
from modalab.train.checkpoint import (
    atomic_write_text, latest_valid, load_trainer_state, rng_state, save_checkpoint,
)
from modalab.train.engine import LoopConfig, LoopState, fit
from modalab.train.gradcache import gradcache_accumulate, naive_accumulate, split_batch, supports_exact
from modalab.train.loader import TrainStream
from modalab.train.optim import GroupRule, build_optimizer, param_groups
from modalab.train.precision import autocast, enable_grad_checkpointing, make_scaler
from modalab.train.seeding import seed_everything
from modalab.train.stages import Stage, rebuild_optimizer, set_trainable, stage_index


def find_run_dir(out_dir: str, name: str) -> Path | None:
    """The newest ``<out_dir>/<name>-*`` run directory (for ``--resume`` without ``--out``)."""
    runs = [p for p in Path(out_dir).glob(f"{name}-*") if (p / "run.json").is_file()]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def run(
    recipe: Recipe,
    out: Path | None = None,
    recipe_path: str | None = None,
    overrides: list[str] | None = None,
    resume: bool = False,
    restart: bool = False,
) -> Path:
    """Train and evaluate ``recipe``; return the run directory.

    Under torchrun every process calls this; they join one process group. With ``resume`` the run
    continues in ``out`` (or the newest ``run.out_dir/run.name-*``) from its latest valid
    checkpoint. A directory that holds a run but no valid checkpoint is refused
    (``experiment/resume.py``) unless ``restart``; a fresh ``out`` starts from step 0.
    SIGINT/SIGTERM/SIGHUP stop the run at a step boundary with a checkpoint
    (``experiment/signals.py``); run.json then says ``interrupted``.
    """
    tr = recipe.train
    threads_before = torch.get_num_threads()
    if tr.num_threads:
        torch.set_num_threads(threads_per_process(tr.num_threads))
        busy = oversubscribed(torch.get_num_threads())
        if busy:
            warnings.warn(busy, stacklevel=2)
    if tr.deterministic:
        torch.use_deterministic_algorithms(True)
    owns_group = not D.dist.is_initialized()
    env = D.init_distributed(tr.device)
    clean = False
    try:
        with StopSignals() as stop:
            path = _run(recipe, env, out, recipe_path, overrides, resume, restart, stop)
        clean = True
        return path
    finally:
        torch.set_num_threads(threads_before)  # a caller's (or a test's) thread setting outlives the run
        if owns_group:
            D.shutdown(sync=clean)


def _run(recipe: Recipe, env: D.DistEnv, out: Path | None, recipe_path: str | None,
         overrides: list[str] | None, resume: bool, restart: bool, stop: StopSignals) -> Path:
    recipe, pre_events = resolve_prerequisites(recipe, lambda r, o: run(r, o))
    seed_everything(recipe.run.seed)
    path, existed = None, False
    if env.main:
        if resume and out is None:
            out = find_run_dir(recipe.run.out_dir, recipe.run.name)
        existed = out is not None and (Path(out) / "run.json").is_file()
        path = RunDir.create(out, recipe.run.out_dir, recipe.run.name, exist_ok=resume).path
    path, existed = D.broadcast_object((path, existed), env)
    rd = RunDir(path) if env.main else ReadOnlyRunDir(path)
    yaml_text = recipe.to_yaml()
    start = latest_valid(rd.checkpoints) if resume else None
    if resume and existed:  # decided by rank 0 alone, before it marks the run as running again: a rank
        refusal = None  # that read run.json after that would take rank 0 for another live process
        if env.main:
            try:
                prepare_resume(rd, start, restart)
            except ResumeError as e:
                refusal = str(e)
        refusal = D.broadcast_object(refusal, env)
        if refusal is not None:
            raise ResumeError(refusal)
    if start is not None:
        old = rd.path / "config.yaml"
        if old.is_file() and old.read_text() != yaml_text and env.main:
            warnings.warn(f"{rd.path}: resuming with a recipe that differs from its config.yaml", stacklevel=2)
        rd.update_run_info(status="running", resumed=now_iso(), resumed_from=start.name, pid=os.getpid(),
                           host=platform.node())
    else:
        rd.write_config(yaml_text)
        rd.write_run_info(
            {
                "name": recipe.run.name,
                "recipe": recipe_path,
                "recipe_hash": text_hash(yaml_text),
                "overrides": list(overrides or []),
                "seed": recipe.run.seed,
                "task": recipe.task,
                "command": " ".join(sys.argv),
                "git_commit": git_commit(Path(recipe_path).parent if recipe_path else None),
                "git_dirty": git_dirty(Path(recipe_path).parent if recipe_path else None),
                "machine": machine_info(),
                "processes": env.world,
                "pid": os.getpid(),
                "host": platform.node(),
                "started": now_iso(),
                "status": "running",
            }
        )
    for event in pre_events:
        rd.log(event)
    names = [*recipe.run.loggers, *(["tensorboard"] if recipe.train.tensorboard else [])]
    sinks = Loggers(rd, names, recipe.run.name, recipe.to_dict(), env.main)
    try:
        _train_and_evaluate(recipe, rd, env, start, stop, sinks.log)
    except KeyboardInterrupt as e:
        sig = e if isinstance(e, Interrupted) else Interrupted(2)
        saved = f"; checkpoint step_{sig.step:08d} written" if sig.step is not None else ""
        rd.update_run_info(status="interrupted", ended=now_iso(),
                           error=f"interrupted by {sig}{saved}; continue with --resume")
        sinks.finish("KILLED")
        raise
    except BaseException as e:
        rd.update_run_info(status="failed", ended=now_iso(), error=f"{type(e).__name__}: {clip(str(e), 2000)}")
        sinks.finish("FAILED")
        raise
    if env.main:  # which code computed this run (experiment/code_record.py; read by sweep --reuse)
        atomic_write_text(rd.path / CODE_FILE, json.dumps(code_record(), indent=1))
    rd.update_run_info(status="finished", ended=now_iso())
    rd.drop_run_info("error")  # a resumed run that finishes carries no error of its earlier attempt
    if env.main:
        write_report(rd)
    sinks.finish("FINISHED")
    D.barrier(env)
    return rd.path


def _stages(recipe: Recipe) -> list[Stage]:
    return [Stage(s.steps, tuple(s.trainable), dict(s.lr), s.name) for s in recipe.train.stages]


def _batches(stream: TrainStream, device: torch.device):
    for b in stream:
        yield b.to(device) if device.type != "cpu" and hasattr(b, "to") else b


def _grad_fn(task: Any, recipe: Recipe, env: D.DistEnv, rd: RunDir, speed: Speed):
    """The per-step gradient computation for ``train.accum_steps`` / ``accum_mode``."""
    tr = recipe.train
    n, mode = tr.accum_steps, tr.accum_mode
    if mode == "exact" and not supports_exact(task):
        raise ConfigError(
            f"train.accum_mode=exact: task '{recipe.task}' does not define embed_batch(batch) and "
            f"loss_from_embeddings(embeddings, batch), which GradCache needs; use "
            f"train.accum_mode=naive (each micro-batch then sees only its own negatives)"
        )
    if n == 1:
        return None  # the engine's plain forward + backward
    amp = lambda: autocast(speed.precision, env.device)  # noqa: E731
    if mode == "naive" or (mode == "auto" and not supports_exact(task)):
        rd.log({"event": "accumulation", "mode": "naive", "accum_steps": n})
        return lambda batch, bw: naive_accumulate(task.step, split_batch(batch, n), bw, amp, speed.sync)
    rd.log({"event": "accumulation", "mode": "exact", "accum_steps": n})
    return lambda batch, bw: gradcache_accumulate(
        task.embed_batch, task.loss_from_embeddings, batch, split_batch(batch, n), bw, amp, env.device,
        speed.sync,
    )


def _loss_reduce(ddp: Any, env: D.DistEnv):
    """The engine's mean of ``[loss, finite]`` over ranks: read from the gradient all-reduce when
    the loss travelled in it (``train.ddp.loss_in_bucket``), else one all-reduce of its own."""
    if not env.enabled:
        return None
    if ddp is not None and ddp.loss is not None:
        return ddp.loss_mean
    return lambda v: D.all_mean(v, env)


def _train_and_evaluate(recipe: Recipe, rd: RunDir, env: D.DistEnv, start: Path | None,
                        stop: StopSignals | None = None, log: Any = None) -> dict:
    t0 = time.perf_counter()
    tr, o = recipe.train, recipe.optim
    if tr.batch_size % (env.world * tr.accum_steps):
        raise ConfigError(
            f"train.batch_size={tr.batch_size} must be divisible by processes x accum_steps = "
            f"{env.world} x {tr.accum_steps}"
        )
    task = registry.build("task", recipe.task, recipe, rd)
    if not implements(task, Task):
        raise TypeError(f"task '{recipe.task}' ({type(task).__qualname__}) does not implement the task "
                        f"contract (tasks/base.py): missing {', '.join(missing_members(task))}")
    model = task.model
    if tr.grad_checkpointing:
        enable_grad_checkpointing(model, tr.grad_checkpointing)
    model.to(env.device)
    for m in task.extra_modules().values():
        m.to(env.device)
    D.broadcast_parameters(model, env)
    if env.enabled:
        seed_everything(recipe.run.seed + 1_000 * env.rank)  # per-rank randomness (augmentation)
    fsdp = tr.strategy == "fsdp" and env.enabled
    if fsdp:
        from modalab.layers import block_types

        D.shard_model(model, block_types())
    holder: dict[str, Any] = {"stage": None, "opt": None}
    speed = setup_speed(model, recipe, env, rd, fsdp, lambda: holder["opt"].zero_grad(set_to_none=True), rd.log)
    # under ddp DistributedDataParallel reduces the gradients during backward; replicated
    # parameters it does not cover (fsdp's scalars) are averaged here
    ddp = speed.ddp

    def sync(ps: list[torch.nn.Parameter]) -> None:
        if ddp is not None:
            ddp.after_backward()
        rest = [p for p in ps if not D.is_sharded(p)]
        D.average_gradients(ddp.uncovered(rest) if ddp is not None else rest, env)

    # stages and the optimizer ------------------------------------------------------------
    stages = _stages(recipe)
    base_rules = [GroupRule(g.pattern, g.lr, g.weight_decay) for g in o.param_groups]

    def make_optimizer(stage: Stage | None) -> torch.optim.Optimizer:
        rules = [GroupRule(p, lr) for p, lr in (stage.lr.items() if stage else ())] + base_rules
        return build_optimizer(o.name, param_groups(model, o.lr, o.weight_decay, rules), o.betas, o.eps, o.momentum,
                               o.fused)

    def enter_stage(step: int) -> torch.optim.Optimizer | None:
        if not stages:
            return None
        i = stage_index(stages, step)
        if i == holder["stage"]:
            return None
        n = set_trainable(model, stages[i].trainable)
        if ddp is not None:
            ddp.refresh()
        holder["opt"] = rebuild_optimizer(holder["opt"], lambda: make_optimizer(stages[i]))
        holder["stage"] = i
        rd.log({"step": step, "event": "stage", "stage": i, "name": stages[i].name, "trainable_params": n})
        return holder["opt"]

    start_step = 0
    payload: dict[str, Any] = {}
    state: dict[str, Any] = {}
    if start is not None:
        payload, state = load_trainer_state(start)
        start_step = int(state["step"])
    if stages:  # a resumed run re-enters the stage its optimizer state was saved in
        enter_stage(max(start_step - 1, 0) if start is not None else 0)
    else:
        holder["opt"] = make_optimizer(None)
    scaler = make_scaler(speed.precision, env.device)
    stream = TrainStream(task.train_loader(), local_batch=tr.batch_size // env.world,
                         seed=recipe.run.seed, rank=env.rank, world=env.world)
    loop_state = LoopState()
    second = task.second_optimizer() if implements(task, TwoOptimizers) else None
    if start is not None:
        _restore(start, payload, state, model, task, holder["opt"], scaler, stream, env, rd, fsdp)
        loop_state = LoopState.from_dict(state.get("trainer", {}).get("loop", {}))
        if second is not None and "second_optimizer" in payload:  # e.g. the discriminator's moments
            second.optimizer.load_state_dict(payload["second_optimizer"])

    loop = LoopConfig(
        steps=tr.steps,
        warmup_steps=o.warmup_steps,
        schedule=o.schedule,
        min_lr_ratio=o.min_lr_ratio,
        grad_clip=tr.grad_clip,
        precision=speed.precision,
        log_every=tr.log_every,
        eval_every=tr.eval_every,
        checkpoint_every=tr.checkpoint_every,
        max_bad_steps=tr.max_bad_steps,
        progress=recipe.run.progress and env.main,
        start_step=start_step,
    )

    def checkpoint(step: int) -> None:
        rngs = D.gather_objects(rng_state(), env)
        weights, full_optim = None, {}
        if fsdp:  # every rank takes part in gathering the full tensors
            weights, opt_sd = D.full_state(model, holder["opt"])
            weights = {k: v.detach().cpu().contiguous().clone() for k, v in weights.items()}
            full_optim = {"optimizer_full": opt_sd}  # keyed by parameter name
        if env.main:
            trainer = {"data": stream.state(), "loop": loop_state.to_dict(), "stage": holder["stage"],
                       "world": env.world}
            save_checkpoint(
                rd.checkpoints, step, model, None if fsdp else holder["opt"],
                {**task.state(), "trainer": trainer}, tr.keep_checkpoints, task.extra_modules(),
                trainer={"rng": rngs, **full_optim, **({"scaler": scaler.state_dict()} if scaler else {}),
                         **({"second_optimizer": second.optimizer.state_dict()} if second else {})},
                weights=weights,
            )
        D.barrier(env)

    def evaluate(step: int) -> dict[str, Any]:
        res = {}
        if env.main or fsdp:  # sharded modules gather their weights: every rank must take part
            res = eval_split(task, "val") or {f"test_{k}": v for k, v in task.evaluate(final=False).items()}
        D.barrier(env)
        return res if env.main else {}

    def before_step(step: int) -> torch.optim.Optimizer | None:
        return enter_stage(step)

    graceful = stop is not None and not env.enabled  # ranks cannot stop at different steps
    with stop.deferred() if graceful else contextlib.nullcontext():
        summary = fit(
            model,
            _batches(stream, env.device),
            ddp.wrap(task.step) if ddp is not None else task.step,
            holder["opt"],
            loop,
            log=log or rd.log,
            evaluate=evaluate,
            checkpoint=checkpoint,
            after_step=task.after_step,
            grad_fn=_grad_fn(task, recipe, env, rd, speed),
            scaler=scaler,
            sync_grads=sync if env.enabled else None,
            reduce=_loss_reduce(ddp, env),
            before_step=before_step if stages else None,
            state=loop_state,
            samples_per_batch=env.world,
            should_stop=stop.requested if graceful else None,
            wrap_compute=speed.wrap_compute,
            second=second,
        )
    if "stopped_at" in summary:  # a signal: save this step boundary unless fit just did
        done = summary["stopped_at"]
        periodic = done > start_step and tr.checkpoint_every and done % tr.checkpoint_every == 0
        if not periodic and not (start is not None and done == start_step):
            checkpoint(done)
        raise Interrupted(stop.signum or 2, done)  # type: ignore[union-attr]
    checkpoint(tr.steps)
    if not env.main:
        if fsdp:
            task.evaluate(final=True)
            eval_split(task, "val")
        return {}
    results = task.evaluate(final=True)
    results.update(split_keys(results, eval_split(task, "val")))
    results.update(task.counts())
    results.update(summary)
    results["wall_seconds"] = time.perf_counter() - t0
    rd.write_results(results)
    rd.log({"step": tr.steps, "event": "final", **{k: v for k, v in results.items() if isinstance(v, (int, float))}})
    return results

