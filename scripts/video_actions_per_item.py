"""Per-clip test correctness of finished ``video_actions`` runs, for the two-level bootstrap.

    python scripts/video_actions_per_item.py RUN_OR_SWEEP_DIR [...]

Since 2026-12-06 the ``video_actions`` task writes ``artifacts/per_item.json`` itself; runs made
before that have only a confusion matrix, so ``modalab compare`` falls back to the paired t-interval
for them. For those runs this rebuilds each run's task from its ``config.yaml``,
loads the newest valid checkpoint (safetensors), predicts the test split and writes
``artifacts/per_item.json`` (``metrics.test_top1``: 0/1 per test clip, in the split's order), which
``modalab compare`` then resamples (seeds x clips). The recomputed accuracy must equal the run's own
``results.json`` ``test_top1`` (same weights, same clips), else nothing is written for that run and
the script exits non-zero. Run from the repository root: the data cache paths in the clip manifest
are relative to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from modalab import config, registry
from modalab.experiment.rundir import ReadOnlyRunDir, RunDir
from modalab.train.checkpoint import latest_valid, load_weights


def run_dirs(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        found = [r.parent for r in sorted(p.rglob("results.json"))] if p.is_dir() else []
        if not found:
            raise SystemExit(f"{p}: no finished run (results.json) found")
        out += found
    return out


@torch.no_grad()
def per_item(run: Path) -> tuple[list[int], float, float]:
    """(0/1 correctness per test clip, recomputed top-1, recorded test_top1) of one run."""
    recipe = config.load(run / "config.yaml")
    if recipe.task != "video_actions":
        raise SystemExit(f"{run}/config.yaml: task is '{recipe.task}', expected 'video_actions'")
    ckpt = latest_valid(run / "checkpoints")
    if ckpt is None:
        raise SystemExit(f"{run}/checkpoints: no valid checkpoint to evaluate")
    torch.manual_seed(0)  # predict() is deterministic; this only pins any lazy init
    task = registry.build("task", "video_actions", recipe, ReadOnlyRunDir(run))
    load_weights(ckpt, task.model)
    logits, labels, _ = task.predict(task.data.test)
    correct = (logits.argmax(1) == labels).long()  # (N,)
    recorded = float(json.loads((run / "results.json").read_text())["test_top1"])
    return correct.tolist(), float(correct.float().mean()), recorded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", type=Path, help="video_actions run or sweep directories")
    args = ap.parse_args(argv)
    bad = 0
    for run in run_dirs(args.paths):
        items, acc, recorded = per_item(run)
        if abs(acc - recorded) > 1e-6:
            print(f"{run}: recomputed test top-1 {acc:.6f} != results.json test_top1 {recorded:.6f}; "
                  f"per_item.json not written", file=sys.stderr)
            bad += 1
            continue
        RunDir(run).write_artifact("per_item", {"split": "test", "ids": list(range(len(items))),
                                                "metrics": {"test_top1": items}})
        print(f"{run}: {len(items)} test clips, top-1 {acc:.4f} (matches results.json)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
