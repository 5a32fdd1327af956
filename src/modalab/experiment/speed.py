"""The runner's speed settings, resolved once per run and recorded in run.json:

- ``train.precision: auto`` -> fp32 or bf16 from a probe of the model's largest block
  (``train/precision_auto.py``); rank 0 decides for every rank.
- ``train.compile: true|false|auto`` -> transformer blocks compiled in place, the first step timed
  and guarded (``train/compile.py``).
- ``train.strategy: ddp`` under torchrun -> the task's step routed through
  ``DistributedDataParallel`` (``train/ddp.py``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from modalab.config import Recipe
from modalab.experiment.rundir import RunDir
from modalab.train import dist as D
from modalab.train.compile import (
    CompileReport, GuardedCompute, block_modules, compile_blocks, decide, toolchain_problem,
)
from modalab.train.ddp import DataParallelStep, LocalStep
from modalab.train.precision_auto import choose_precision, model_probe


@dataclass
class Speed:
    precision: str
    sync: DataParallelStep | LocalStep
    compile_report: CompileReport
    wrap_compute: Callable[[Callable], Callable] | None

    @property
    def ddp(self) -> DataParallelStep | None:
        return self.sync if isinstance(self.sync, DataParallelStep) else None


def block_types() -> tuple[type, ...]:
    """Transformer block classes: the units ``train.compile`` compiles."""
    from modalab.audio.whisper_encoder import Block as AudioBlock
    from modalab.layers import Block
    from modalab.video.temporal import Block as VideoBlock

    return (Block, AudioBlock, VideoBlock)


def setup_speed(model: nn.Module, recipe: Recipe, env: D.DistEnv, rd: RunDir, fsdp: bool,
                zero_grad: Callable[[], None], log: Callable[[dict[str, Any]], None]) -> Speed:
    """Resolve precision and compile, wrap for DDP; call after the model is on its device and
    (under FSDP) sharded."""
    tr = recipe.train
    blocks = block_modules(model, block_types())
    micro = max(1, tr.batch_size // (env.world * tr.accum_steps))
    probe, what = model_probe(model, blocks, micro, env.device) if tr.precision == "auto" else (None, str)
    precision, prec_info = choose_precision(tr.precision, env.device, probe, what)
    precision, prec_info = D.broadcast_object((precision, prec_info), env)  # type: ignore[misc]
    n_block = sum(p.numel() for b in blocks for p in b.parameters())
    report = decide(tr.compile, block_params=n_block, device=env.device,
                    problem=toolchain_problem(env.device))
    wrap = None
    if report.used:
        compile_blocks(blocks)
        report.modules = len(blocks)

        def log_compile(rec: dict[str, Any]) -> None:  # the first step's time and any fallback
            log(rec)
            rd.update_run_info(compile=report.to_dict())

        wrap = lambda compute: GuardedCompute(compute, blocks, report, zero_grad, log_compile)  # noqa: E731
    elif tr.compile is True:
        warnings.warn(f"train.compile=true: {report.reason}", stacklevel=2)
    sync: DataParallelStep | LocalStep = LocalStep()
    if env.enabled and not fsdp:
        dd = tr.ddp
        sync = DataParallelStep(
            model, dd.bucket_cap_mb, [env.device.index] if env.device.type == "cuda" else None,
            find_unused=dd.find_unused_parameters, static_graph=dd.static_graph,
            bucket_view=dd.gradient_as_bucket_view, batched_copy=dd.batched_grad_copy,
            loss_in_bucket=dd.loss_in_bucket and tr.accum_steps == 1, log=log,
        )
    rd.update_run_info(precision=prec_info, compile=report.to_dict(),
                       grad_sync="DistributedDataParallel" if env.enabled and not fsdp else
                       ("fsdp" if fsdp else "none"),
                       **({"ddp": {**tr.ddp.model_dump(mode="json"),
                                   "loss_in_bucket": sync.loss is not None}}
                          if isinstance(sync, DataParallelStep) else {}))
    return Speed(precision, sync, report, wrap)
