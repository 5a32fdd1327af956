"""Full-logits contrastive loss (open_clip ClipLoss / SigLipLoss) vs the tiled exact loss.

For each batch size, each variant runs forward + backward once in a fresh subprocess, so that the
peak memory (VmHWM, the resident high-water mark) belongs to that run alone. The script measures
this machine's matmul peak (float32 and bfloat16, a (4096 x D) @ (D x 4096) product, best of 5),
once up front and again in each tiled subprocess right after its run (the higher counts: the
machine may be shared), and reports the fraction of it that the tiled loss reaches, counting the
6 B^2 D flops of the arithmetic (logits and the two gradient products) and, in brackets, the flops
it executes (8 B^2 D for InfoNCE, whose backward recomputes the logits).

    python benchmarks/contrastive_loss.py --dim 512 --batch 4096 8192 16384 32768 \
        --dtype float32 bfloat16 --skip-reference-above 16384

The reference (float32 always, as in open_clip) builds logits_per_image = s * I @ T.T and
logits_per_text = s * T @ I.T and takes the cross-entropy both ways (ClipLoss with one process).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _hwm_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no VmHWM line (Linux only)")


def _clip_loss(img, txt, scale):  # open_clip ClipLoss, world_size 1
    logits_per_image = scale * img @ txt.T
    logits_per_text = scale * txt @ img.T
    labels = torch.arange(img.shape[0])
    ce_i, ce_t = F.cross_entropy(logits_per_image, labels), F.cross_entropy(logits_per_text, labels)
    return (ce_i + ce_t) / 2


def _siglip_loss(img, txt, scale, bias):  # open_clip SigLipLoss, world_size 1
    logits = scale * img @ txt.T + bias
    labels = 2 * torch.eye(img.shape[0], dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / img.shape[0]


def child(impl: str, loss: str, batch: int, dim: int, dtype: str, tile: int | None) -> dict:
    """One forward + backward; returns seconds, extra peak memory (bytes) and the loss."""
    from modalab.align.tiled import tiled_info_nce, tiled_siglip

    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    txt = F.normalize(0.1 * img + torch.randn(batch, dim, generator=g) / dim**0.5, dim=1)
    img, txt = (t.to(DTYPES[dtype]).requires_grad_() for t in (img, txt))
    scale = torch.tensor(100.0, requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)
    before = _hwm_kb()
    t0 = time.perf_counter()
    if impl == "reference":
        if loss == "info_nce":
            out = _clip_loss(img, txt, scale)
        else:
            out = _siglip_loss(img, txt, scale, bias)
    elif loss == "info_nce":
        out = tiled_info_nce(img, txt, scale, tile=tile)
    else:
        out = tiled_siglip(img, txt, scale, bias, tile=tile)
    out.backward()
    secs = time.perf_counter() - t0
    extra = (_hwm_kb() - before) * 1024
    # the machine's matmul rate right after the run, in the same process (shared machines vary)
    return {"seconds": secs, "extra_bytes": extra, "loss": out.item(),
            "peak": matmul_peak(dim, torch.float32, reps=3)}


def matmul_peak(dim: int, dtype: torch.dtype, n: int = 4096, reps: int = 5) -> float:
    """Best-of-``reps`` FLOP/s of a (n x dim) @ (dim x n) product in ``dtype``."""
    a, b = torch.randn(n, dim).to(dtype), torch.randn(n, dim).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b.T, out=out)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b.T, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n * n * dim / best


def _run_child(*args: str) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--batch", type=int, nargs="+", default=[4096, 8192])
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=list(DTYPES))
    p.add_argument("--loss", nargs="+", default=["info_nce"], choices=["info_nce", "siglip"])
    p.add_argument("--skip-reference-above", type=int, default=None,
                   help="skip the full-logits reference above this batch (it needs ~16 B^2 bytes)")
    p.add_argument("--tile", type=int, default=None, help="tile edge (default: automatic)")
    p.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        impl, loss, batch, dim, dtype, tile = args.child
        print(json.dumps(child(impl, loss, int(batch), int(dim), dtype, int(tile) or None)))
        return

    peaks = {name: matmul_peak(args.dim, dt) for name, dt in DTYPES.items()}
    print(f"# threads {torch.get_num_threads()}, matmul peak at D={args.dim}: "
          + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()))
    hdr = (f"{'loss':9} {'B':>7} {'ref s':>8} {'ref GB':>7} {'dtype':9} {'tiled s':>8} "
           f"{'tiled GB':>8} {'speedup':>8} {'mem ratio':>9} {'% peak fp32 (exec)':>19} "
           f"{'rel diff':>9}")
    print(hdr)
    for loss in args.loss:
        for b in args.batch:
            skip = args.skip_reference_above is not None and b > args.skip_reference_above
            ref = None if skip else _run_child("reference", loss, str(b), str(args.dim),
                                               "float32", "0")
            for dt in args.dtype:
                ours = _run_child("tiled", loss, str(b), str(args.dim), dt, str(args.tile or 0))
                print(_row(loss, b, dt, ref, ours, peaks["float32"], args.dim), flush=True)


def _row(loss: str, b: int, dt: str, ref: dict | None, ours: dict, peak: float, dim: int) -> str:
    def cell(r: dict | None, key: str, div: float = 1.0, fmt: str = ".2f") -> str:
        if r is None:
            return "-"
        return "failed" if "error" in r else format(r[key] / div, fmt)

    ok = ref is not None and "error" not in ref and "error" not in ours
    speed = f"{ref['seconds'] / ours['seconds']:.2f}x" if ok else "-"
    mem = f"{ref['extra_bytes'] / max(ours['extra_bytes'], 1):.1f}x" if ok else "-"
    diff = f"{abs(ours['loss'] - ref['loss']) / max(abs(ref['loss']), 1e-30):.1e}" if ok else "-"
    frac = "-"
    if "error" not in ours:
        useful, executed = 6 * b * b * dim, (8 if loss == "info_nce" else 6) * b * b * dim
        rate = 1 / ours["seconds"] / max(peak, ours["peak"])
        frac = f"{100 * useful * rate:.0f}% ({100 * executed * rate:.0f}%)"
    return (f"{loss:9} {b:>7} {cell(ref, 'seconds'):>8} {cell(ref, 'extra_bytes', 1e9):>7} "
            f"{dt:9} {cell(ours, 'seconds'):>8} {cell(ours, 'extra_bytes', 1e9, '.3f'):>8} "
            f"{speed:>8} {mem:>9} {frac:>19} {diff:>9}")


if __name__ == "__main__":
    main()
