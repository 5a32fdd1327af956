"""Run recipes at full size one after another and print a markdown table of their headline metrics.

    python scripts/run_recipes.py --out runs/recipes recipes/clip_digits.yaml recipes/clip_digits_siglip.yaml
    python scripts/run_recipes.py --seeds 0 1 2 recipes/clip_digits.yaml

Each run is a normal ``modalab run`` subprocess (so it is isolated and leaves a run directory);
extra ``key=value`` overrides after ``--`` apply to every run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

KEYS = ("zeroshot_top1", "image_to_text_R@1", "text_to_image_R@1", "wall_seconds")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipes", nargs="+")
    p.add_argument("--out", default="runs/recipes")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--set", nargs="*", default=[], help="overrides for every run")
    args = p.parse_args()
    rows = []
    for recipe in args.recipes:
        for seed in args.seeds:
            out = Path(args.out) / f"{Path(recipe).stem}-seed{seed}"
            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "modalab", "run", recipe, "--out", str(out),
                   f"run.seed={seed}", "run.progress=false", *args.set]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(f"FAILED {recipe} seed {seed}:\n{proc.stderr[-2000:]}", file=sys.stderr)
                rows.append((recipe, seed, None, wall))
                continue
            rows.append((recipe, seed, json.loads((out / "results.json").read_text()), wall))
            print(f"done {recipe} seed {seed} in {wall:.0f} s", file=sys.stderr, flush=True)
    print("| recipe | seed | " + " | ".join(KEYS[:-1]) + " | process wall s |")
    print("|---|---|" + "---|" * len(KEYS))
    for recipe, seed, res, wall in rows:
        vals = ["failed"] * (len(KEYS) - 1) if res is None else [f"{res.get(k, float('nan')):.3f}" for k in KEYS[:-1]]
        print(f"| {Path(recipe).name} | {seed} | " + " | ".join(vals) + f" | {wall:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
