"""The training loop: steps, precision, accumulation, clipping, schedule, non-finite guard,
logging, evaluation and checkpoint hooks. It knows nothing about modalities or processes: a task
supplies ``step_fn(batch) -> (loss, logs)`` (or a ``grad_fn`` that also runs the backward pass,
e.g. GradCache) and, when it trains a second set of parameters with their own optimiser (a GAN
discriminator), a ``SecondOptimizer``; the runner supplies hooks for gradient sync across
processes, stage changes, evaluation and checkpoints.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from modalab.errors import ModalabError
from modalab.train.checkpoint import rng_preserved
from modalab.train.optim import clip_gradients, grad_norm, lr_multiplier, set_lr
from modalab.train.precision import autocast


class TrainingError(ModalabError, RuntimeError):
    """Training cannot continue; the message says why and what to try."""


@dataclass
class LoopConfig:
    steps: int
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    precision: str = "fp32"
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 0
    max_bad_steps: int = 10
    progress: bool = True
    start_step: int = 0


@dataclass
class LoopState:
    """What the loop carries across steps (and across a resume, through the checkpoint)."""

    skipped: int = 0
    bad_run: int = 0
    window: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "bad_run": self.bad_run, "window": list(self.window)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoopState":
        return cls(int(d.get("skipped", 0)), int(d.get("bad_run", 0)), list(d.get("window", [])))


@dataclass
class SecondOptimizer:
    """A second optimiser the loop steps on the same batch, right after the main optimiser step
    (a GAN discriminator: generator step, then discriminator step on the detached outputs).

    ``loss_fn(batch, step)`` returns ``(loss, logs)``, or ``None`` when there is nothing to train at
    this step (before the discriminator starts). Its learning rate is not scheduled and its
    gradients are not clipped; under fp16 it shares the main ``GradScaler``.
    """

    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[Any, int], tuple[Tensor, dict[str, float]] | None]


def _second_step(
    second: SecondOptimizer, batch: Any, step: int, precision: str, device: torch.device,
    scaler: torch.amp.GradScaler | None, sync_grads: Callable[[list[nn.Parameter]], None] | None,
) -> dict[str, float]:
    with autocast(precision, device):
        out = second.loss_fn(batch, step)
    if out is None:
        return {}
    loss, logs = out
    opt = second.optimizer
    opt.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler else loss).backward()
    if sync_grads is not None:
        sync_grads([p for g in opt.param_groups for p in g["params"] if p.requires_grad])
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return logs


def _batch_ids(batch: Any, k: int = 8) -> list[str]:
    ids = getattr(batch, "ids", None)
    return [str(i) for i in ids[:k]] if isinstance(ids, (list, tuple)) else []


def fit(
    model: nn.Module,
    batches: Iterator[Any],
    step_fn: Callable[[Any], tuple[Tensor, dict[str, float]]],
    optimizer: torch.optim.Optimizer,
    cfg: LoopConfig,
    *,
    log: Callable[[dict[str, Any]], None],
    evaluate: Callable[[int], dict[str, Any]] | None = None,
    checkpoint: Callable[[int], None] | None = None,
    after_step: Callable[[int], dict[str, float]] | None = None,
    batch_size: Callable[[Any], int] = len,
    grad_fn: Callable[[Any, Callable[[Tensor], None]], tuple[Tensor, dict[str, float]]] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    sync_grads: Callable[[list[nn.Parameter]], None] | None = None,
    reduce: Callable[[list[float]], list[float]] | None = None,
    before_step: Callable[[int], torch.optim.Optimizer | None] | None = None,
    state: LoopState | None = None,
    samples_per_batch: int = 1,
    should_stop: Callable[[], bool] | None = None,
    wrap_compute: Callable[[Callable], Callable] | None = None,
    second: SecondOptimizer | None = None,
) -> dict[str, Any]:
    """Run optimizer steps ``cfg.start_step .. cfg.steps - 1``.

    - ``grad_fn(batch, backward)`` computes the loss *and* its gradients (calling ``backward`` on
      each scalar it back-propagates); without it the loop does ``backward(step_fn(batch)[0])``
      under autocast.
    - ``sync_grads(params)`` averages gradients over processes; ``reduce(values)`` averages a few
      scalars (the loss) so every process takes the same skip decision and logs the global loss.
    - ``before_step(step)`` may return a new optimizer (a stage boundary).
    - ``after_step(step)`` runs after each optimizer step and may return values to log.
    - ``state`` carries the skip counters and the loss window across a resume.
    - ``should_stop()`` is asked before each step; when it says yes the loop returns at that step
      boundary with ``stopped_at`` in the summary (a graceful stop on a signal).
    - ``wrap_compute(compute)`` wraps the per-step gradient computation (``train.compile``'s
      timing and eager fallback, ``train/compile.py``).
    - ``second`` steps a second optimiser after each (finite) main step; its logs join the step's.
    Returns a summary: steps done, skipped (non-finite) steps, ``train_seconds`` (wall) and
    ``train_cpu_seconds`` (process CPU: every thread of this process) of the loop, evaluations
    included, and ``eval_seconds_in_loop`` / ``eval_cpu_seconds_in_loop`` (the wall / CPU seconds of
    those evaluations).
    """
    device = next(model.parameters()).device
    if scaler is None and cfg.precision == "fp16" and device.type == "cuda":
        scaler = torch.amp.GradScaler("cuda")
    st = state or LoopState()
    bar = tqdm(total=cfg.steps, initial=cfg.start_step, disable=not cfg.progress, desc="train", unit="step")
    seen = 0
    t_start = t_window = time.perf_counter()
    cpu_start, eval_wall, eval_cpu = time.process_time(), 0.0, 0.0

    def timing() -> dict[str, float]:
        """Wall and process-CPU seconds of the loop so far, and the wall seconds of in-loop evaluations."""
        return {"train_seconds": time.perf_counter() - t_start,
                "train_cpu_seconds": time.process_time() - cpu_start, "eval_seconds_in_loop": eval_wall,
                "eval_cpu_seconds_in_loop": eval_cpu}

    def backward(t: Tensor) -> None:
        (scaler.scale(t) if scaler else t).backward()

    def default_grad_fn(batch: Any, bw: Callable[[Tensor], None]) -> tuple[Tensor, dict[str, float]]:
        with autocast(cfg.precision, device):
            loss, logs = step_fn(batch)
        bw(loss)
        return loss, logs

    compute = grad_fn or default_grad_fn
    if wrap_compute is not None:
        compute = wrap_compute(compute)
    model.train()
    for step in range(cfg.start_step, cfg.steps):
        if should_stop is not None and should_stop():
            bar.close()
            return {"steps": step, "stopped_at": step, "skipped_steps": st.skipped, **timing()}
        if before_step is not None:
            optimizer = before_step(step) or optimizer
        params = [p for p in model.parameters() if p.requires_grad]
        batch = next(batches)
        mult = lr_multiplier(step, cfg.steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
        set_lr(optimizer, mult)
        optimizer.zero_grad(set_to_none=True)
        loss, logs = compute(batch, backward)
        if sync_grads is not None:
            sync_grads(params)
        if scaler:
            scaler.unscale_(optimizer)
        gnorm = grad_norm(params)
        loss_value = float(loss.detach().float())
        if reduce is not None:
            loss_value, finite = reduce([loss_value, float(math.isfinite(loss_value))])
            loss_value = loss_value if finite == 1.0 else float("nan")
        if not (math.isfinite(loss_value) and math.isfinite(gnorm)):
            st.skipped += 1
            st.bad_run += 1
            log({"step": step, "event": "non_finite", "loss": loss_value, "grad_norm": gnorm,
                 "batch_ids": _batch_ids(batch)})
            optimizer.zero_grad(set_to_none=True)
            if scaler:
                scaler.update()
            if st.bad_run >= cfg.max_bad_steps:
                raise TrainingError(
                    f"{st.bad_run} consecutive steps had a non-finite loss or gradient (last at step "
                    f"{step}). Likely causes: a temperature too low (logit scale too high), a "
                    f"learning rate too high, or fp16 overflow; try a lower optim.lr, "
                    f"train.precision=bf16/fp32, or a larger tau"
                )
            bar.update(1)
            continue
        st.bad_run = 0
        if cfg.grad_clip is not None:
            clip_gradients(params, cfg.grad_clip, gnorm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if second is not None:
            logs = {**logs, **_second_step(second, batch, step, cfg.precision, device, scaler, sync_grads)}
        extra = after_step(step) if after_step else {}
        st.window.append(loss_value)
        seen += batch_size(batch) * samples_per_batch
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            now = time.perf_counter()
            rec = {
                "step": done,
                "loss": sum(st.window) / len(st.window),
                "lr": optimizer.param_groups[0]["lr"],
                "grad_norm": gnorm,
                "samples_per_s": seen / max(now - t_window, 1e-9),
                **logs,
                **extra,
            }
            log(rec)
            bar.set_postfix(
                loss=f"{rec['loss']:.3f}",
                lr=f"{rec['lr']:.1e}",
                **({"scale": f"{extra['logit_scale']:.1f}"} if "logit_scale" in extra else {}),
                sps=f"{rec['samples_per_s']:.0f}",
            )
            st.window, seen, t_window = [], 0, now
        if evaluate and cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
            t_eval, c_eval = time.perf_counter(), time.process_time()
            with rng_preserved():  # the evaluation schedule must not move the training run
                log({"step": done, **evaluate(done)})
            eval_wall += time.perf_counter() - t_eval
            eval_cpu += time.process_time() - c_eval
            model.train()
        if checkpoint and cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
            checkpoint(done)
        bar.update(1)
    bar.close()
    return {"steps": cfg.steps, "skipped_steps": st.skipped, **timing()}
