"""Sparse frame reading by keyframe seek vs decoding everything; ToMe throughput at several r.

    python benchmarks/video_decode.py                 # 3,000 frames 320x240 @ 30 fps, GOP 60
    python benchmarks/video_decode.py --frames 600    # quicker

Part 1 writes an H.264 (libx264) .mp4 with a keyframe every 2 s (GOP = 2 * fps) and reads 8
random frames (several seeded index sets, median time) with ``read_frames`` (seek + forward
decode, with and without non-reference frame skipping) against two baselines that decode every
frame: ``read_all`` (decode + RGB conversion of all frames, the sequential reference) and a bare
PyAV decode loop without conversion. Every sparse result is checked against the full decode.

Part 2 runs a ToMe encoder (random init, no_grad) over joint space-time tokens at several r and
reports clips/s, tokens left after the last layer, and the cosine similarity of the pooled output
to r = 0 (a proxy for how much the representation changes, not an accuracy).

Each measurement runs in a forked child; "peak MB" is that child's peak RSS growth. Torch runs
single-threaded by default (--threads) so the ToMe timings are less sensitive to other load.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np
import torch

from modalab.video.decode import probe, read_all, read_frames, write_video
from modalab.video.merging import ToMeEncoder


def _child(fn: Callable[[], Any], conn) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    conn.send((out, peak / 1024.0))
    conn.close()


def measure(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` in a forked process: (its return value, peak RSS growth in MB)."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(fn, child))
    p.start()
    out = parent.recv()
    p.join()
    return out


def synthetic_frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Scrolling gradients with a moving square and mild noise: (n, h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        img = np.stack([(xx + 2 * t) % 256, (yy + t) % 256,
                        128 + 100 * np.sin((xx + yy) / 20 + t / 10)], -1)
        cx, cy = int(w / 2 + w / 3 * np.sin(t / 30)), int(h / 2 + h / 3 * np.cos(t / 40))
        img[max(cy - 20, 0) : cy + 20, max(cx - 20, 0) : cx + 20] = 255
        img += rng.normal(0, 4, (h, w, 1)).astype(np.float32)
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def decode_only(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def bench_decode(args: argparse.Namespace, workdir: Path) -> list[tuple]:
    path = workdir / "bench.mp4"
    t0 = time.perf_counter()
    write_video(path, synthetic_frames(args.frames, args.height, args.width), fps=args.fps,
                gop=2 * args.fps)
    info = probe(path)
    print(f"wrote {path.name}: {info.num_frames} frames {info.width}x{info.height} @ {info.fps:g} "
          f"fps, {len(info.keyframes)} keyframes, {path.stat().st_size / 1e6:.1f} MB "
          f"({time.perf_counter() - t0:.0f} s)")
    sets = [np.sort(np.random.default_rng(s).choice(info.num_frames, args.sparse, replace=False))
            for s in range(args.repeats)]

    def sparse(skip: bool) -> Callable[[], tuple[float, int]]:
        def run() -> tuple[float, int]:
            times, decoded = [], 0
            for idx in sets:
                stats: dict = {}
                t = time.perf_counter()
                read_frames(path, idx, info, skip_nonref=skip, stats=stats)
                times.append(time.perf_counter() - t)
                decoded += stats["decoded"]
            return statistics.median(times), decoded // len(sets)
        return run

    def timed(fn: Callable[[], Any]) -> Callable[[], tuple[float, int]]:
        def run() -> tuple[float, int]:
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t, info.num_frames
        return run

    def check() -> int:  # every sparse result equals the full sequential decode
        full = read_all(path)
        for idx in sets:
            for skip in (False, True):
                out = read_frames(path, idx, info, skip_nonref=skip)
                assert np.array_equal(out, full[idx]), "sparse read differs from full decode"
        return 2 * len(sets)

    if args.check:  # in a child, outside the timed runs, so the parent's peak RSS stays low
        print(f"checked: {measure(check)[0]} sparse reads equal the sequential decode")
    rows = []
    for name, fn in [
        ("read_all (decode + RGB, every frame)", timed(lambda: read_all(path))),
        ("PyAV decode loop, no RGB (every frame)", timed(lambda: decode_only(path))),
        ("read_frames, seek (skip_nonref=False)", sparse(False)),
        ("read_frames, seek + skip non-ref", sparse(True)),
    ]:
        (sec, frames), peak = measure(fn)
        rows.append((name, sec, frames, peak))
    return rows


def bench_tome(args: argparse.Namespace) -> list[tuple]:
    torch.manual_seed(0)
    tokens = args.tome_frames * (args.tome_image // 16) ** 2
    x = torch.randn(args.tome_batch, args.tome_frames, tokens // args.tome_frames, args.tome_dim)
    rows = []
    ref = None
    for r in args.r:
        def run(r: int = r) -> tuple[float, int, list]:
            torch.manual_seed(0)
            enc = ToMeEncoder(args.tome_dim, args.tome_depth, args.tome_dim // 64, r).eval()
            with torch.no_grad():
                enc(x)  # warm-up
                t = time.perf_counter()
                for _ in range(args.tome_iters):
                    out = enc(x)
                sec = (time.perf_counter() - t) / args.tome_iters
            left = tokens
            for _ in range(args.tome_depth):
                left -= min(r, left - left // 2)
            return sec, left, out.tolist()

        (sec, left, out), peak = measure(run)
        out = torch.tensor(out)
        ref = out if ref is None else ref
        cos = torch.nn.functional.cosine_similarity(out, ref, dim=-1).mean().item()
        rows.append((r, sec, args.tome_batch / sec, left, cos, peak))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--sparse", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-check", dest="check", action="store_false")
    ap.add_argument("--r", type=int, nargs="+", default=[0, 32, 64, 96, 128])
    ap.add_argument("--tome-frames", type=int, default=8)
    ap.add_argument("--tome-image", type=int, default=224)
    ap.add_argument("--tome-dim", type=int, default=192)
    ap.add_argument("--tome-depth", type=int, default=6)
    ap.add_argument("--tome-batch", type=int, default=2)
    ap.add_argument("--tome-iters", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the ToMe part")
    ap.add_argument("--skip-decode", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if not args.skip_decode:
        with tempfile.TemporaryDirectory() as d:
            rows = bench_decode(args, Path(d))
        base_all, base_dec = rows[0][1], rows[1][1]
        print(f"\n{args.sparse} sparse frames of {args.frames} "
              f"(median of {args.repeats} index sets)")
        print("| method | time (s) | frames decoded | peak MB | vs read_all | vs decode-only |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, sec, frames, peak in rows:
            print(f"| {name} | {sec:.3f} | {frames} | {peak:.0f} | {base_all / sec:.1f}x | "
                  f"{base_dec / sec:.1f}x |")

    rows = bench_tome(args)
    n = args.tome_frames * (args.tome_image // 16) ** 2
    print(f"\nToMe encoder: {args.tome_batch} clips x {n} tokens ({args.tome_frames} frames x "
          f"{(args.tome_image // 16) ** 2} patches), dim {args.tome_dim}, depth {args.tome_depth}")
    print("| r per layer | s / batch | clips/s | speed-up | tokens left | cos to r=0 | peak MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r, sec, cps, left, cos, peak in rows:
        print(f"| {r} | {sec:.3f} | {cps:.1f} | {rows[0][1] / sec:.2f}x | {left} | {cos:.3f} | "
              f"{peak:.0f} |")


if __name__ == "__main__":
    main()
