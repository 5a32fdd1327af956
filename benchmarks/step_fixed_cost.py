"""The per-step cost that does not shrink with the batch: one process, the digits recipe's model,
loss and AdamW, steps at batch B and B / 2 alternating step by step (so a loaded machine slows
both alike), main-thread CPU time per step.

With T(B) = F + c B, two data-parallel processes at B / 2 each can at best reach
T(B) / T(B / 2) = (F + c B) / (F + c B / 2) of one process's throughput (communication free):
F, the fixed part (per-op dispatch of forward and backward, the optimizer over all parameters,
the gradient norm), is what every rank repeats.

    OMP_NUM_THREADS=1 python benchmarks/step_fixed_cost.py --batch 128 --steps 60

Pre-made batches (data loading is not in these figures; ``benchmarks/ddp_phases.py`` has it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from modalab import registry
from modalab.config import load
from modalab.experiment.rundir import RunDir
from modalab.train.gradcache import split_batch
from modalab.train.optim import build_optimizer, clip_gradients, grad_norm, param_groups

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clip_digits.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60, help="timed steps per batch size")
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    recipe = load(RECIPE, [f"train.batch_size={args.batch}"])
    with tempfile.TemporaryDirectory() as tmp:
        task = registry.build("task", recipe.task, recipe, RunDir.create(Path(tmp) / "run", tmp, "bench"))
        model = task.model
        model.train()
        opt = build_optimizer("adamw", param_groups(model, 1e-3, 0.05), (0.9, 0.98), 1e-6)
        batches = iter(task.train_loader())
        full = [next(batches) for _ in range(4)]
        halves = [split_batch(b, 2)[0] for b in full]
        parts = {"fwd+bwd": [], "optimizer": [], "norm+clip": []}
        times: dict[int, dict[str, list[float]]] = {args.batch: {k: [] for k in parts},
                                                    args.batch // 2: {k: [] for k in parts}}
        for i in range(2 * (args.steps + args.warmup)):
            big = i % 2 == 0
            b = full[i // 2 % 4] if big else halves[i // 2 % 4]
            t0 = time.thread_time()
            opt.zero_grad(set_to_none=True)
            task.step(b)[0].backward()
            t1 = time.thread_time()
            params = [p for p in model.parameters() if p.requires_grad]
            clip_gradients(params, 1.0, grad_norm(params))
            t2 = time.thread_time()
            opt.step()
            task.after_step(i)
            t3 = time.thread_time()
            if i >= 2 * args.warmup:
                rec = times[args.batch if big else args.batch // 2]
                rec["fwd+bwd"].append(t1 - t0)
                rec["norm+clip"].append(t2 - t1)
                rec["optimizer"].append(t3 - t2)
    med = {bs: {k: statistics.median(v) * 1e3 for k, v in r.items()} for bs, r in times.items()}
    tot = {bs: sum(m.values()) for bs, m in med.items()}
    b, h = args.batch, args.batch // 2
    print(f"main-thread CPU ms per step, medians of {args.steps} alternating steps (pre-made batches)")
    for k in parts:
        fixed = 2 * med[h][k] - med[b][k]
        print(f"  {k:<10} batch {b}: {med[b][k]:7.2f}   batch {h}: {med[h][k]:7.2f}   "
              f"fixed part 2T({h})-T({b}): {fixed:6.2f}")
    fixed = 2 * tot[h] - tot[b]
    print(f"  {'step':<10} batch {b}: {tot[b]:7.2f}   batch {h}: {tot[h]:7.2f}   fixed part: {fixed:6.2f} "
          f"({100 * fixed / tot[b]:.0f}% of a batch-{b} step)")
    print(f"  ceiling of 2 processes at {h} each vs 1 at {b}, communication free: {tot[b] / tot[h]:.2f}x")


if __name__ == "__main__":
    main()
