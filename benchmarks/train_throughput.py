"""Training throughput of the default recipe's model (recipes/clip_digits.yaml): fp32 vs bf16,
1 vs 2 processes (torchrun, gloo on CPU / NCCL on GPU), and exact accumulation (GradCache) vs
one batch.

Each configuration is a real ``modalab run`` in a fresh process (``--nproc 2`` launches torchrun),
``train.steps`` optimizer steps at the recipe's global batch of 128; samples/s is the mean of the
``samples_per_s`` the loop logs, skipping the first window (warm-up). Evaluation is reduced to
one pass at the end and not timed.

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --steps 40 --threads 1
    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --only "fp32 x1" "fp32 x2" --rounds 3
    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --only "fp32 x1" "fp32 x2" "fp32 x2 ddp-before" \
        --rounds 5 --steps 60

``fp32 2 independent x64`` is the machine's ceiling for two processes: two unrelated single-process
runs at the per-rank batch (64) started together, with no communication; their summed samples/s
over ``fp32 x1`` is what two cores give here before DDP costs anything (shared caches, memory
bandwidth and the hypervisor's scheduling included).

``--rounds`` alternates the configurations (reversing the order every other round) and reports
medians and the median of the per-round ratios, which is what survives a loaded machine.

With ``--threads 1`` every process uses one core, so 2 processes use twice the cores of 1: the
comparison is "one more worker", as on a machine with one GPU per process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clip_digits.yaml"

CONFIGS = {
    "fp32 x1": (1, ["train.precision=fp32"]),
    "bf16 x1": (1, ["train.precision=bf16"]),
    "fp32 x2": (2, ["train.precision=fp32"]),
    # DDP as before issue 24's h56 (find_unused_parameters every step, the loss's own all-mean,
    # gloo on the default interface): the same gradients, for a side-by-side comparison
    "fp32 x2 ddp-before": (2, ["train.precision=fp32", "train.ddp.find_unused_parameters=true",
                               "train.ddp.loss_in_bucket=false", "train.ddp.gloo_socket_ifname=null"]),
    # torch's fused AdamW (optim.fused): ~2 ms less per rank and step than foreach, not bit-identical
    "fp32 x2 fused": (2, ["train.precision=fp32", "optim.fused=true"]),
    "fp32 x1 exact accum 4x32": (1, ["train.precision=fp32", "train.accum_steps=4", "train.accum_mode=exact"]),
    # the machine's two-process ceiling (module docstring): nproc -2 = two unrelated runs, rates summed
    "fp32 2 independent x64": (-2, ["train.precision=fp32", "train.batch_size=64"]),
}


def _command(nproc: int, overrides: list[str], steps: int, threads: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "modalab", "run", str(RECIPE), "--out", str(out), "--nproc", str(nproc),
            f"train.steps={steps}", "train.log_every=10", "train.eval_every=0", f"train.num_threads={threads}",
            "run.progress=false", *overrides]


def _samples_per_s(out: Path) -> float:
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    sps = [r["samples_per_s"] for r in recs if "samples_per_s" in r and "event" not in r]
    return sum(sps[1:]) / max(1, len(sps[1:]))


def measure(nproc: int, overrides: list[str], steps: int, threads: int, out: Path) -> float:
    """Samples/s of one run with ``nproc`` processes; ``nproc < 0``: ``-nproc`` independent
    single-process runs started together, their rates summed."""
    outs = [out] if nproc > 0 else [out / f"job{i}" for i in range(-nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = [(subprocess.Popen(_command(max(nproc, 1), overrides, steps, threads, o), env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE), o) for o in outs]
    for p, o in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, p.args))} failed:\n{err[-3000:]}")
    return sum(_samples_per_s(o) for _, o in procs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--only", nargs="*", help="configuration names to run (default: all)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternating rounds (order reversed every other round); medians reported")
    args = ap.parse_args()
    names = [n for n in CONFIGS if not args.only or n in args.only]
    results: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                nproc, over = CONFIGS[name]
                v = measure(nproc, over, args.steps, args.threads, Path(tmp) / f"r{r}-{names.index(name)}")
                results[name].append(v)
                print(f"round {r}  {name:<28} {v:8.1f} samples/s", flush=True)
    print("\nmedian over rounds:")
    for name, vs in results.items():
        print(f"  {name:<28} {statistics.median(vs):8.1f} samples/s  (rounds: {', '.join(f'{v:.1f}' for v in vs)})")
    base = results.get("fp32 x1")
    if base:
        print("\nratio to fp32 x1 (median of per-round ratios):")
        for name, vs in results.items():
            ratios = [v / b for v, b in zip(vs, base)]
            print(f"  {name:<28} {statistics.median(ratios):5.2f}x  (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
