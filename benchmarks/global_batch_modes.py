"""The contrastive loss alone across processes: ``loss.global_batch`` gather vs replicate (vs off,
which is not the global loss: the floor of no communication), forward + backward per step.

Run under torchrun (gloo on CPU), one thread per process; modes alternate in blocks of ``--iters``
calls, ``--rounds`` times; rank 0 prints medians of wall and process CPU time (gloo's threads
included) per call, per rank:

    OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc-per-node 2 \\
        benchmarks/global_batch_modes.py --batch 128 --dim 64 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist

from modalab.align.objectives_clip import TiledContrastive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128, help="global batch N")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--kind", default="info_nce", choices=["info_nce", "siglip"])
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} is not divisible by {world} processes")
    n = args.batch // world
    g = torch.Generator().manual_seed(rank)
    x = torch.nn.functional.normalize(torch.randn(n, args.dim, generator=g), dim=1).requires_grad_()
    y = torch.nn.functional.normalize(torch.randn(n, args.dim, generator=g), dim=1).requires_grad_()
    labels = torch.randint(0, 10, (n,), generator=g)
    scale = torch.tensor(14.3, requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True) if args.kind == "siglip" else None
    modes = ["gather", "replicate", "off"]
    fns = {m: TiledContrastive(args.kind, mask_same_label=True, global_batch=m) for m in modes}
    res: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    for r in range(args.rounds + 1):  # round 0 warms up
        for m in modes if r % 2 == 0 else modes[::-1]:
            dist.barrier()
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.iters):
                loss = fns[m](x, y, scale, bias, labels=labels)
                loss.backward()
                x.grad = y.grad = scale.grad = None
            if r:
                res[m].append(((time.perf_counter() - w0) / args.iters, (time.process_time() - c0) / args.iters))
    if rank == 0:
        print(f"{args.kind}, global batch {args.batch} ({world} x {n}), dim {args.dim}; per call and rank, "
              f"medians of {args.rounds} rounds x {args.iters} calls")
        for m in modes:
            w = statistics.median(v[0] for v in res[m]) * 1e3
            c = statistics.median(v[1] for v in res[m]) * 1e3
            print(f"  {m:<10} wall {w:7.3f} ms   process CPU {c:7.3f} ms")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
