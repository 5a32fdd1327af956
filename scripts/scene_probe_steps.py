"""Choose the scene cell probe's training steps on VAL (issue 21): train ``eval/scene_probe.CellProbe``
on the real training scenes of ``recipes/chapter5/token_count_scenes.yaml``'s data (32x32, seed 0)
and score the real VAL scenes; the test scenes are never read.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/scene_probe_steps.py --steps 300 600
"""

from __future__ import annotations

import argparse
import time

import torch

from modalab.data.sources.digit_scenes import DigitScenesConfig, build_digit_scenes
from modalab.data.transforms import MEAN, STD
from modalab.eval.scene_probe import cell_labels, probe_metrics, train_cell_probe


def split_tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) in [0, 1] and cell labels (N, 4) of a digit_scenes split."""
    items = [dataset[i] for i in range(len(dataset))]
    return (torch.stack([(s.media * STD + MEAN).clamp(0, 1) for s in items]),
            torch.stack([cell_labels(s.meta["scene"]) for s in items]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, nargs="+", default=[300, 600])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=32)
    a = p.parse_args()
    torch.set_num_threads(1)
    cfg = DigitScenesConfig(source="digit_scenes", image_size=a.image_size, train_scenes=4000,
                            test_scenes=500, val_fraction=0.1)
    data = build_digit_scenes(cfg, seed=a.seed)
    (xt, yt), (xv, yv) = split_tensors(data.train), split_tensors(data.val)
    print(f"train {tuple(xt.shape)} val {tuple(xv.shape)} (split: val)", flush=True)
    for steps in a.steps:
        t = time.process_time()
        probe = train_cell_probe(xt, yt, steps=steps, seed=a.seed)
        m = {k: round(v, 4) for k, v in probe_metrics(probe, xv, yv).items()}
        print(steps, m, f"cpu {time.process_time() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
