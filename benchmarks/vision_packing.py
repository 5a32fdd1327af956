"""Any-resolution batching and FLIP masking: padding waste, encoder throughput, step speed.

Part 1: variable-size digits (log-uniform canvases 8..64 x 8..160, patch 8) through one ViT
    (rope positions) in three layouts, all with block-diagonal masks so the outputs are the same:
    pad-to-max:  random batches, each image padded to the batch's largest (H, W);
    bucketing:   batches grouped by aspect ratio then area (data/batching.bucket_batches);
    packing:     NaViT greedy packing into sequences of max_seq_len tokens (vision/packing).
    Real-token share = non-padding slots (class + patch tokens) / all slots; samples/s = images encoded per second
    (forward, no grad); peak MiB = extra resident memory of one pass over the set.
Part 2: FLIP patch dropout at r = 0, 0.5, 0.75: one training step (forward, InfoNCE against
    fixed text embeddings, backward, AdamW) of a fixed-size ViT; speedup over r = 0.

Run: python benchmarks/vision_packing.py [--quick]
"""

from __future__ import annotations

import argparse
import math

import torch

from _timing import median_seconds  # benchmarks/_timing.py
from _memory import fix_malloc, peak_mib  # benchmarks/_memory.py

from modalab.align.losses import info_nce
from modalab.data.batching import bucket_batches, random_batches
from modalab.data.sources.varres_digits import make_varres_digits
from modalab.vision.packing import greedy_pack, pack_images
from modalab.vision.vit import VisionTransformer

PATCH = 8  # digits canvases are 8..64 x 8..160 pixels: 1..160 patches each


def _layouts(images, sizes, batch_size: int, max_seq_len: int):
    """Each layout: a list of PackedBatch covering all images once, and its real-token share."""
    n = len(images)
    out = {}
    for name, batches in [("pad-to-max", random_batches(n, batch_size, seed=0)),
                          ("bucketing", bucket_batches(sizes, batch_size, seed=0))]:
        packed = []
        for b in batches:
            rows = max(sizes[i][0] for i in b) // PATCH
            cols = max(sizes[i][1] for i in b) // PATCH
            one_per_row = [[j] for j in range(len(b))]
            packed.append(pack_images([images[i] for i in b], PATCH, 1 + rows * cols, groups=one_per_row))
        out[name] = (packed, None)
    lengths = [1 + (h // PATCH) * (w // PATCH) for h, w in sizes]
    groups = greedy_pack(lengths, max_seq_len)
    seqs_per_batch = max(1, batch_size * sum(lengths) // n // max_seq_len)  # about batch_size images
    packed = []
    for a in range(0, len(groups), seqs_per_batch):
        chunk = groups[a : a + seqs_per_batch]
        ids = [i for g in chunk for i in g]
        local = {i: j for j, i in enumerate(ids)}
        local_groups = [[local[i] for i in g] for g in chunk]
        packed.append(pack_images([images[i] for i in ids], PATCH, max_seq_len, groups=local_groups))
    out["packing"] = (packed, None)
    share = lambda p: sum(int(b.valid.sum()) for b in p) / sum(b.image_ids.numel() for b in p)  # noqa: E731
    return {k: (p, share(p)) for k, (p, _) in out.items()}


def part1(n: int, batch_size: int, max_seq_len: int, reps: int) -> None:
    images, _, sizes = make_varres_digits(n, seed=0, multiple=PATCH)
    torch.manual_seed(0)
    model = VisionTransformer(32, PATCH, 1, width=64, depth=2, heads=4, pos_encoding="rope").eval()
    layouts = _layouts(images, sizes, batch_size, max_seq_len)
    print(f"\n## {n} variable-size digits, ViT width 64 depth 2 patch {PATCH} (rope), forward, batch ~{batch_size}")
    print(f"{'layout':>11} {'real tokens':>11} {'slots':>8} {'seqs':>5} {'s/pass':>7} "
          f"{'samples/s':>9} {'peak MiB':>8} {'speedup':>8}")
    base = None
    for name, (packed, share) in layouts.items():
        def run() -> None:
            with torch.no_grad():
                for p in packed:
                    model.forward_packed(p)

        mem = peak_mib(run)  # the first pass, also the warm-up
        t = median_seconds(run, reps)
        if name == "pad-to-max":
            base = t
        slots = sum(p.image_ids.numel() for p in packed)
        seqs = sum(p.image_ids.shape[0] for p in packed)
        print(f"{name:>11} {share:>10.1%} {slots:>8} {seqs:>5} {t:>7.2f} {n / t:>9.1f} {mem:>8.1f} {base / t:>7.2f}x")


def part2(image_size: int, batch_size: int, ratios: list[float], reps: int, patch: int = 4) -> None:
    print(f"\n## FLIP patch dropout, training step, ViT width 128 depth 4 patch {patch}, "
          f"{image_size}x{image_size} ({(image_size // patch) ** 2} patches), batch {batch_size}")
    print(f"{'ratio':>6} {'tokens':>7} {'ms/step':>8} {'samples/s':>9} {'peak MiB':>8} {'speedup':>8}")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=g)
    text = torch.nn.functional.normalize(torch.randn(batch_size, 128, generator=g), dim=-1)
    base = None
    for r in ratios:
        torch.manual_seed(0)
        model = VisionTransformer(image_size, patch, 3, width=128, depth=4, heads=4, patch_dropout=r).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scale = torch.tensor(math.log(1 / 0.07))

        def step() -> None:
            emb = torch.nn.functional.normalize(model(x), dim=-1)
            loss = info_nce(emb, text, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        mem = peak_mib(step)
        t = median_seconds(step, reps)
        base = base or t
        n = (image_size // patch) ** 2
        tokens = 1 + (n if r == 0 else max(1, int(n * (1 - r))))
        print(f"{r:>6.2f} {tokens:>7} {t * 1e3:>8.1f} {batch_size / t:>9.1f} {mem:>8.1f} {base / t:>7.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = ap.parse_args()
    fix_malloc()
    torch.set_num_threads(1)  # the machine is shared: one thread gives steadier timings
    if args.quick:
        part1(n=64, batch_size=16, max_seq_len=256, reps=1)
        part2(image_size=32, batch_size=8, ratios=[0.0, 0.5, 0.75], reps=1)
    else:
        part1(n=512, batch_size=32, max_seq_len=256, reps=3)
        part2(image_size=64, batch_size=32, ratios=[0.0, 0.5, 0.75], reps=3)


if __name__ == "__main__":
    main()
