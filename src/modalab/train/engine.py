"""The training loop: steps, precision, clipping, schedule, non-finite guard, logging, evaluation
and checkpoint hooks. It knows nothing about modalities: a task supplies ``step_fn(batch) ->
(loss, logs)``; everything else is plain PyTorch.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from modalab.train.optim import grad_norm, lr_multiplier, set_lr


class TrainingError(RuntimeError):
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


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast context for ``fp32`` (none), ``bf16`` or ``fp16``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


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
) -> dict[str, Any]:
    """Run optimizer steps ``cfg.start_step .. cfg.steps - 1``.

    ``after_step(step)`` runs after each optimizer step (e.g. clamp the logit scale) and may
    return values to log. Returns a summary: steps done, skipped (non-finite) steps, seconds.
    """
    device = next(model.parameters()).device
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" and device.type == "cuda" else None
    params = [p for p in model.parameters() if p.requires_grad]
    bar = tqdm(
        total=cfg.steps, initial=cfg.start_step, disable=not cfg.progress, desc="train", unit="step"
    )
    window: list[float] = []
    seen, skipped, bad_run = 0, 0, 0
    t_start = t_window = time.perf_counter()
    model.train()
    for step in range(cfg.start_step, cfg.steps):
        batch = next(batches)
        mult = lr_multiplier(step, cfg.steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
        set_lr(optimizer, mult)
        optimizer.zero_grad(set_to_none=True)
        with autocast(cfg.precision, device):
            loss, logs = step_fn(batch)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        gnorm = grad_norm(params)
        if not (math.isfinite(loss.item()) and math.isfinite(gnorm)):
            skipped += 1
            bad_run += 1
            log({"step": step, "event": "non_finite", "loss": loss.item(), "grad_norm": gnorm})
            optimizer.zero_grad(set_to_none=True)
            if scaler:
                scaler.update()
            if bad_run >= cfg.max_bad_steps:
                raise TrainingError(
                    f"{bad_run} consecutive steps had a non-finite loss or gradient (last at step "
                    f"{step}). Likely causes: a temperature too low (logit scale too high), a "
                    f"learning rate too high, or fp16 overflow; try a lower optim.lr, "
                    f"train.precision=bf16/fp32, or a larger tau"
                )
            continue
        bad_run = 0
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        extra = after_step(step) if after_step else {}
        window.append(loss.item())
        seen += batch_size(batch)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            now = time.perf_counter()
            rec = {
                "step": done,
                "loss": sum(window) / len(window),
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
            window, seen, t_window = [], 0, now
        if evaluate and cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
            log({"step": done, **evaluate(done)})
            model.train()
        if checkpoint and cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
            checkpoint(done)
        bar.update(1)
    bar.close()
    return {"steps": cfg.steps, "skipped_steps": skipped, "train_seconds": time.perf_counter() - t_start}


def infinite(loader: Any) -> Iterator[Any]:
    """Cycle over a DataLoader forever (a new shuffle each epoch)."""
    while True:
        yield from loader
