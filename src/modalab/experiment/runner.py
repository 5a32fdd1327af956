"""``modalab run``: one recipe, one run directory, read top to bottom.

seed -> run directory -> task (data, tokenizer, model, objective) -> optimizer -> training loop
(metrics.jsonl, periodic evaluation, checkpoints) -> final checkpoint -> evaluation ->
results.json -> report.html.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from modalab import registry
from modalab.config import Recipe
from modalab.experiment.report import write_report
from modalab.experiment.rundir import RunDir, git_commit, machine_info, now_iso, text_hash
from modalab.train.checkpoint import save_checkpoint
from modalab.train.engine import LoopConfig, fit, infinite
from modalab.train.optim import GroupRule, build_optimizer, param_groups


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run(
    recipe: Recipe,
    out: Path | None = None,
    recipe_path: str | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """Train and evaluate ``recipe``; return the run directory."""
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    seed_everything(recipe.run.seed)
    rd = RunDir.create(out, recipe.run.out_dir, recipe.run.name)
    yaml_text = recipe.to_yaml()
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
            "machine": machine_info(),
            "pid": os.getpid(),
            "started": now_iso(),
            "status": "running",
        }
    )
    try:
        results = _train_and_evaluate(recipe, rd)
    except BaseException as e:
        rd.update_run_info(status="failed", ended=now_iso(), error=f"{type(e).__name__}: {e}")
        raise
    rd.update_run_info(status="finished", ended=now_iso())
    write_report(rd)
    return rd.path


def _train_and_evaluate(recipe: Recipe, rd: RunDir) -> dict:
    t0 = time.perf_counter()
    task = registry.build("task", recipe.task, recipe, rd)
    model = task.model
    o = recipe.optim
    rules = [GroupRule(g.pattern, g.lr, g.weight_decay) for g in o.param_groups]
    optimizer = build_optimizer(
        o.name, param_groups(model, o.lr, o.weight_decay, rules), o.betas, o.eps, o.momentum
    )
    tr = recipe.train
    loop = LoopConfig(
        steps=tr.steps,
        warmup_steps=o.warmup_steps,
        schedule=o.schedule,
        min_lr_ratio=o.min_lr_ratio,
        grad_clip=tr.grad_clip,
        precision=tr.precision,
        log_every=tr.log_every,
        eval_every=tr.eval_every,
        checkpoint_every=tr.checkpoint_every,
        max_bad_steps=tr.max_bad_steps,
        progress=recipe.run.progress,
    )

    def checkpoint(step: int) -> None:
        save_checkpoint(
            rd.checkpoints, step, model, optimizer, task.state(), tr.keep_checkpoints, task.extra_modules()
        )

    summary = fit(
        model,
        infinite(task.train_loader()),
        task.step,
        optimizer,
        loop,
        log=rd.log,
        evaluate=lambda step: {f"val_{k}": v for k, v in task.evaluate(final=False).items()},
        checkpoint=checkpoint,
        after_step=task.after_step,
    )
    checkpoint(tr.steps)
    results = task.evaluate(final=True)
    results.update(task.counts())
    results.update(summary)
    results["wall_seconds"] = time.perf_counter() - t0
    rd.write_results(results)
    rd.log({"step": tr.steps, "event": "final", **{k: v for k, v in results.items() if isinstance(v, (int, float))}})
    return results
