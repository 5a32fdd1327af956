"""FLIP patch dropout on digit scenes: the time of one full training step of the recipe's model.

The model, data and optimiser of ``recipes/chapter5/flip_scenes.yaml`` (32 px scenes, 4 px patches:
64 patches, both towers, in-batch InfoNCE, AdamW), built through the same task the runner uses, at
each ``model.vision.patch_dropout`` ratio. For each ratio:

- **step**: the whole training step (both towers forward, loss, backward, AdamW) -- what FLIP's
  "2.5x faster training" is about;
- **vision fwd+bwd**: the image tower alone, forward and backward of the sum of its pooled output --
  the part that masking shrinks (the text tower, the loss and the optimiser are not masked).

Timing: wall (``perf_counter``) and process CPU (``process_time``) per step, median over rounds; the
ratios alternate within each round, the order reversed every other round, so a change in machine
load hits every ratio alike; ``speedup`` is the median of the per-round ratios of wall time (and of
CPU time) against ratio 0. One torch thread. The output states the load average it ran under.

Run: python benchmarks/flip_scenes_step.py [--rounds 5] [--steps 10] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from modalab.config import load
from modalab.experiment.rundir import RunDir
from modalab.tasks.contrastive import ContrastiveTask
from modalab.train.optim import build_optimizer, param_groups

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "chapter5" / "flip_scenes.yaml"


def build(ratio: float, tmp: Path, n_batches: int, extra: list[str]):
    """(model, task, optimiser, batches) of the recipe at patch_dropout ``ratio``; same seed and data."""
    recipe = load(RECIPE, [f"model.vision.patch_dropout={ratio}", "data.train_scenes=1000",
                           "data.test_scenes=100", *extra])
    torch.manual_seed(recipe.run.seed)
    task = ContrastiveTask(recipe, RunDir(tmp / f"r{ratio}"))
    model = task.model.train()
    o = recipe.optim
    opt = build_optimizer(o.name, param_groups(model, o.lr, o.weight_decay, []), o.betas, o.eps, o.momentum)
    it = iter(task.train_loader())
    batches = [next(it) for _ in range(n_batches)]
    return model, task, opt, batches


def full_step(model, task, opt, batch) -> None:
    loss, _ = task.step(batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def vision_step(model, task, opt, batch) -> None:
    model.zero_grad(set_to_none=True)
    model.image_encoder(batch.images).sum().backward()


def timed(fn, setup, steps: int) -> tuple[float, float]:
    """(wall, cpu) seconds per step over ``steps`` steps cycling through the prepared batches."""
    model, task, opt, batches = setup
    fn(model, task, opt, batches[0])  # warm-up
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(steps):
        fn(model, task, opt, batches[i % len(batches)])
    return (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps


def measure(name: str, fn, setups: dict[float, tuple], rounds: int, steps: int) -> None:
    ratios = list(setups)
    wall: dict[float, list[float]] = {r: [] for r in ratios}
    cpu: dict[float, list[float]] = {r: [] for r in ratios}
    for k in range(rounds):
        for r in (ratios if k % 2 == 0 else ratios[::-1]):
            w, c = timed(fn, setups[r], steps)
            wall[r].append(w)
            cpu[r].append(c)
    base = ratios[0]
    print(f"\n## {name}: {rounds} rounds x {steps} steps per ratio")
    print(f"{'ratio':>6} {'ms/step wall':>12} {'ms/step CPU':>11} {'speedup wall':>12} {'speedup CPU':>11}")
    for r in ratios:
        sw = statistics.median(b / a for a, b in zip(wall[r], wall[base]))
        sc = statistics.median(b / a for a, b in zip(cpu[r], cpu[base]))
        print(f"{r:>6.2f} {statistics.median(wall[r]) * 1e3:>12.1f} {statistics.median(cpu[r]) * 1e3:>11.1f} "
              f"{sw:>11.2f}x {sc:>10.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per ratio and round")
    ap.add_argument("--ratios", default="0.0,0.5,0.75")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the machine is shared: one thread gives steadier timings
    extra = ["train.batch_size=8"] if args.quick else []
    rounds, steps = (1, 2) if args.quick else (args.rounds, args.steps)
    ratios = [float(r) for r in args.ratios.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        setups = {r: build(r, Path(tmp), 4, extra) for r in ratios}
        model = setups[ratios[0]][0]
        enc = model.image_encoder
        print(f"recipe {RECIPE.name}: batch {len(setups[ratios[0]][3][0].images)}, image "
              f"{tuple(setups[ratios[0]][3][0].images.shape[1:])}, vision params "
              f"{sum(p.numel() for p in enc.parameters()):,}, all params "
              f"{sum(p.numel() for p in model.parameters()):,}; "
              f"load average at start {os.getloadavg()[0]:.1f}")
        c0 = time.process_time()
        measure("whole training step (both towers, loss, AdamW)", full_step, setups, rounds, steps)
        measure("vision tower forward + backward", vision_step, setups, rounds, steps)
        print(f"\nprocess CPU of the timing: {time.process_time() - c0:.1f} s; load average at end "
              f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
