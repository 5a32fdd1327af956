"""Digit-scene reads with and without the render cache (``data.render_cache_mb``).

A training run of recipes/clip_scenes.yaml reads each of its 5,400 training scenes about 70 times
(6,000 steps x batch 64). The scene and its image are the same on every read (only the negatives and
mixed captions are drawn afresh), so the cache keeps the normalised image of each scene after its
first read.
baseline: ``render_cache_mb: 0``, every read draws the scene and renders it.
ours: the default budget (512 MiB), the first epoch renders, later epochs copy from memory.
Reads follow a shuffled order per epoch with the hard-negative captions of
recipes/clip_scenes_hard_negatives.yaml; both arms return identical samples (checked here and in
tests/data/test_digit_scenes.py). Time: seconds per epoch; memory: the cache's size in MiB and the
extra peak resident memory of the whole measurement (benchmarks/_memory.py).

Run: python benchmarks/scene_render_cache.py [--quick] [--epochs 3]
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from _memory import fix_malloc, peak_mib  # benchmarks/_memory.py

from modalab.data.sources.digit_scenes import DigitScenesConfig, SceneMaker


def epochs(maker: SceneMaker, n: int, count: int) -> list[float]:
    """Seconds per epoch of ``n`` training-scene reads in a shuffled order."""
    out = []
    for e in range(count):
        order = list(range(n))
        random.Random(e).shuffle(order)
        t0 = time.perf_counter()
        for i in order:
            maker.sample("train", i)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 scenes instead of 5,400")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--size", type=int, default=32, help="canvas px (recipes/clip_scenes.yaml: 32)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    fix_malloc()
    n = 1000 if args.quick else 5400
    print(f"torch {torch.__version__}, 1 thread, {n} training scenes of {args.size} px, {args.epochs} epochs")
    print(f"{'arm':<22} {'epoch 1 s':>9} {'later epochs s':>14} {'per read ms':>11} {'cache MiB':>9} {'peak MiB':>8}")
    later = {}
    for name, mb in (("no cache (baseline)", 0), ("render cache (ours)", 512)):
        cfg = DigitScenesConfig(source="digit_scenes", image_size=args.size, render_cache_mb=mb,
                                negative_levels=["L1", "L2", "L3", "swap"])
        maker = SceneMaker(cfg, 0)
        times: list[float] = []
        peak = peak_mib(lambda: times.extend(epochs(maker, n, args.epochs)))
        rest = sum(times[1:]) / max(1, len(times) - 1)
        later[mb] = rest
        cache = maker.cache_bytes / 2**20
        print(f"{name:<22} {times[0]:>9.2f} {rest:>14.2f} {1e3 * rest / n:>11.3f} {cache:>9.1f} {peak:>8.1f}")
    print(f"later epochs: {later[0] / later[512]:.2f}x faster with the cache")
    torch.manual_seed(0)
    a = SceneMaker(DigitScenesConfig(source="digit_scenes", image_size=args.size), 0).sample("train", 1)
    torch.manual_seed(0)
    b = SceneMaker(DigitScenesConfig(source="digit_scenes", image_size=args.size,
                                     render_cache_mb=0), 0).sample("train", 1)
    assert torch.equal(a.media, b.media) and a.meta["negatives"] == b.meta["negatives"]


if __name__ == "__main__":
    main()
