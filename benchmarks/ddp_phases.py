"""Where a training step's time goes, per phase, in 1 vs N processes (issue 24: DDP scaling).

Each configuration is the real runner (``modalab.experiment.runner.run``) on the digits recipe
(``recipes/clip_digits.yaml``), one torch thread per process, in a fresh process (N > 1: torchrun,
gloo on CPU). The worker wraps the functions a step calls with timers — data (the loader's
next batch: sampling, augmentation, tokenisation, collate), the DDP wrapper, the model's forward,
the loss (with its cross-rank gathers), backward (with DDP's all-reduce), grad norm, clipping, the
loss all-reduce, the optimizer step, ``after_step`` — and records for each step wall time, the main
thread's CPU time and the process's CPU time (gloo's threads included). "rest" is the step minus
its phases (the loop's own Python). Phases are exclusive: the DDP wrapper row excludes the forward
inside it.

    OMP_NUM_THREADS=1 python benchmarks/ddp_phases.py --configs 1x128 2x128 --steps 60 --rounds 3
    OMP_NUM_THREADS=1 python benchmarks/ddp_phases.py --configs 1x128 1x64 --steps 60   # fixed cost per step

A config ``NxB`` is N processes at global batch B. The figure that survives a loaded machine is
CPU time per sample summed over processes (``cpu us/sample``): perfect scaling keeps it equal
between 1 and N processes; what N processes add is what they repeat or communicate. A config may
carry DistributedDataParallel keyword arguments and recipe overrides of its own:

    OMP_NUM_THREADS=1 python benchmarks/ddp_phases.py --configs 2x128 "2x128 ddp.bucket_cap_mb=0.25"
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clip_digits.yaml"
WARMUP = 10  # steps left out of every figure


class Phases:
    """Exclusive wall and thread-CPU seconds per phase and step; step totals with process CPU."""

    def __init__(self) -> None:
        self.step = -1
        self.stack: list[list[float]] = []  # [wall0, cpu0, child_wall, child_cpu]
        self.steps: list[dict] = []
        self.marks: list[tuple[float, float, float]] = []  # (wall, thread cpu, process cpu) at step starts

    def new_step(self) -> None:
        self.step += 1
        self.marks.append((time.perf_counter(), time.thread_time(), time.process_time()))
        self.steps.append({})

    def open(self) -> None:
        self.stack.append([time.perf_counter(), time.thread_time(), 0.0, 0.0])

    def close(self, name: str) -> None:
        w0, c0, cw, cc = self.stack.pop()
        wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
        if self.stack:
            self.stack[-1][2] += wall
            self.stack[-1][3] += cpu
        if self.steps:
            w, c = self.steps[-1].get(name, (0.0, 0.0))
            self.steps[-1][name] = (w + wall - cw, c + cpu - cc)

    @contextmanager
    def phase(self, name: str):
        self.open()
        try:
            yield
        finally:
            self.close(name)

    def summary(self, warmup: int) -> dict:
        """Per-step means over steps ``warmup .. last - 1`` (the last has no end mark)."""
        idx = list(range(warmup, len(self.marks) - 1))
        if not idx:
            raise RuntimeError(f"only {len(self.marks)} steps recorded; raise --steps above {warmup + 1}")
        tot = [tuple(b - a for a, b in zip(self.marks[i], self.marks[i + 1])) for i in idx]
        names = sorted({n for i in idx for n in self.steps[i]})
        out = {"steps": len(idx), "phases": {}}
        for n in names:
            out["phases"][n] = [statistics.fmean(self.steps[i].get(n, (0.0, 0.0))[k] for i in idx) for k in (0, 1)]
        wall, cpu, proc = (statistics.fmean(t[k] for t in tot) for k in range(3))
        out["phases"]["rest (loop)"] = [wall - sum(v[0] for v in out["phases"].values()),
                                        cpu - sum(v[1] for v in out["phases"].values())]
        out.update(step_wall=wall, step_thread_cpu=cpu, step_process_cpu=proc)
        return out


def instrument(rec: Phases) -> None:
    """Wrap what a step calls with ``rec``'s timers (class and module attributes: looked up per call)."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    from modalab.experiment import runner as R
    from modalab.tasks.contrastive import ContrastiveTask as T
    from modalab.train import ddp as P
    from modalab.train import dist as D
    from modalab.train import engine as E

    def wrap(obj, attr: str, name: str) -> None:
        orig = getattr(obj, attr)

        @functools.wraps(orig)
        def timed(*a, **k):
            with rec.phase(name):
                return orig(*a, **k)

        setattr(obj, attr, timed)

    wrap(T, "embed_batch", "forward: model")
    wrap(T, "loss_from_embeddings", "forward: loss (+ gathers)")
    wrap(P.DataParallelStep, "call", "forward: DDP wrapper")
    wrap(torch.Tensor, "backward", "backward (+ DDP all-reduce)")
    wrap(E, "grad_norm", "grad norm")
    wrap(E, "clip_gradients", "clip")
    wrap(D, "all_mean", "loss all-reduce")
    wrap(T, "after_step", "after_step")
    register_optimizer_step_pre_hook(lambda *a: rec.open())
    register_optimizer_step_post_hook(lambda *a: rec.close("optimizer step"))
    batches = R._batches

    def timed_batches(stream, device):
        it = batches(stream, device)
        while True:
            rec.new_step()
            with rec.phase("data"):
                b = next(it)
            yield b

    R._batches = timed_batches
    fit = R.fit

    def timed_fit(*a, **k):
        out = fit(*a, **k)
        rec.new_step()  # the end mark of the last step
        return out

    R.fit = timed_fit


def worker(args: argparse.Namespace) -> None:
    from modalab.config import load
    from modalab.experiment.runner import run
    from modalab.train import ddp as P

    rec = Phases()
    instrument(rec)
    if args.ddp:  # DistributedDataParallel keyword arguments over the runner's (bucket_cap_mb, ...)
        ddp_cls, extra = P.DistributedDataParallel, json.loads(args.ddp)
        P.DistributedDataParallel = lambda *a, **k: ddp_cls(*a, **{**k, **extra})
    over = [f"train.steps={args.steps}", f"train.batch_size={args.batch}", "train.eval_every=0",
            "train.log_every=1000", "train.checkpoint_every=0", "train.num_threads=1", "run.progress=false",
            *args.overrides]
    rank = int(os.environ.get("RANK", "0"))
    run(load(RECIPE, over), Path(args.out) / "run", str(RECIPE), over)
    (Path(args.out) / f"rank{rank}.json").write_text(json.dumps(rec.summary(WARMUP)))


def parse_config(cfg: str) -> tuple[int, int, dict, list[str]]:
    """``"NxB [ddp.KEY=JSON ...] [recipe.key=value ...]"`` -> (N, B, DDP kwargs, recipe overrides)."""
    head, *rest = cfg.split()
    try:
        nproc, batch = (int(x) for x in head.split("x"))
    except ValueError:
        raise SystemExit(f"--configs {cfg!r}: expected 'NxB' first (N processes, global batch B), e.g. 2x128")
    ddp = {k[4:]: json.loads(v) for k, v in (x.split("=", 1) for x in rest if x.startswith("ddp."))}
    return nproc, batch, ddp, [x for x in rest if not x.startswith("ddp.")]


def measure(cfg: str, args: argparse.Namespace, out: Path) -> dict:
    nproc, batch, ddp, over = parse_config(cfg)
    me = [str(Path(__file__).resolve()), "--worker", "--out", str(out), "--steps", str(args.steps),
          "--batch", str(batch), *(["--ddp", json.dumps(ddp)] if ddp else []),
          *(["--overrides", *args.overrides, *over] if args.overrides or over else [])]
    cmd = [sys.executable, *me] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *me]
    env = {"GLOO_SOCKET_IFNAME": "lo", **os.environ, "OMP_NUM_THREADS": "1"}  # as `modalab run --nproc`
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
    phases = {n: [statistics.fmean(r["phases"][n][k] for r in ranks) for k in (0, 1)] for n in ranks[0]["phases"]}
    wall = max(r["step_wall"] for r in ranks)
    cpu = sum(r["step_process_cpu"] for r in ranks)
    return {"nproc": nproc, "batch": batch, "phases": phases, "step_wall": wall,
            "samples_per_s": batch / wall, "cpu_us_per_sample": 1e6 * cpu / batch,
            "thread_cpu_ms": statistics.fmean(r["step_thread_cpu"] for r in ranks) * 1e3}


def table(results: dict[str, list[dict]]) -> str:
    cfgs = list(results)
    med = {c: {k: statistics.median(r[k] for r in rs) for k in ("step_wall", "samples_per_s", "cpu_us_per_sample",
                                                                "thread_cpu_ms")} for c, rs in results.items()}
    names = list(results[cfgs[0]][0]["phases"])
    for rs in results.values():
        names += [n for n in rs[0]["phases"] if n not in names]
    lines = ["| phase (per rank, ms per step: thread CPU / wall) | " + " | ".join(cfgs) + " |",
             "|---|" + "---:|" * len(cfgs)]
    for n in names:
        cells = []
        for c in cfgs:
            vals = [r["phases"].get(n) for r in results[c] if n in r["phases"]]
            cells.append("-" if not vals else
                         f"{1e3 * statistics.median(v[1] for v in vals):.1f} / "
                         f"{1e3 * statistics.median(v[0] for v in vals):.1f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("| step: main-thread CPU ms (per rank) | "
                 + " | ".join(f"{med[c]['thread_cpu_ms']:.1f}" for c in cfgs) + " |")
    lines.append("| step: wall ms | " + " | ".join(f"{1e3 * med[c]['step_wall']:.1f}" for c in cfgs) + " |")
    lines.append("| samples/s (wall) | " + " | ".join(f"{med[c]['samples_per_s']:.0f}" for c in cfgs) + " |")
    lines.append("| process CPU us per sample, all ranks | "
                 + " | ".join(f"{med[c]['cpu_us_per_sample']:.0f}" for c in cfgs) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["1x128", "2x128"],
                    help="'NxB [ddp.KEY=JSON ...] [recipe overrides]': N processes at global batch B, with "
                         "DistributedDataParallel keyword arguments and recipe overrides of its own")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds (order reversed every other one)")
    ap.add_argument("--ddp", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write every round's figures here")
    ap.add_argument("--overrides", nargs="*", default=[], help="recipe overrides, e.g. data.augment=false")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.steps <= WARMUP + 1:
        ap.error(f"--steps must exceed {WARMUP + 1} (the first {WARMUP} steps are warm-up)")
    results: dict[str, list[dict]] = {c: [] for c in args.configs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for i, c in enumerate(args.configs if r % 2 == 0 else args.configs[::-1]):
                res = measure(c, args, Path(tmp) / f"r{r}-{args.configs.index(c)}")
                results[c].append(res)
                print(f"round {r}  {c:<8} {res['samples_per_s']:8.1f} samples/s  "
                      f"{res['cpu_us_per_sample']:7.0f} CPU us/sample (all ranks)", flush=True)
    print()
    print(table(results))
    base = results[args.configs[0]]
    for c in args.configs[1:]:
        ratios = [x["samples_per_s"] / b["samples_per_s"] for x, b in zip(results[c], base)]
        cpu = [x["cpu_us_per_sample"] / b["cpu_us_per_sample"] for x, b in zip(results[c], base)]
        print(f"\n{c} / {args.configs[0]}: samples/s x{statistics.median(ratios):.2f} "
              f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}); CPU per sample x{statistics.median(cpu):.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
