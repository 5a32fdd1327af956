"""AR image-code sampling and region editing with and without key/value caches.

Part 1, sampling (``UnifiedTransformer.generate_codes``):

baseline: ``use_cache=False`` re-encodes the whole prefix [GEN, text, BOI, codes so far] at every
    step: N steps of a forward over up to T + 2 + N positions (O(N^2) token passes).
ours: ``use_cache=True`` (the default) runs the prompt once, then one position per step against
    the cached keys and values of every block (O(N) token passes).
The model has the AR branch's size in ``recipes/ar_vs_diffusion.yaml`` (dim 96, depth 3, 4 heads,
text of 10 ids, 64 codes), random weights: speed does not depend on what was learned. Both paths
draw the same codes from the same generator (checked here; tested in
tests/models/test_kv_cache_decoding.py).
Part 2, region editing (``models/editing.ar_edit_region``, the AR row of the AR vs diffusion table's
    controllability test: the bottom half of the codes resampled, an ancestral pass and 2 Gibbs
    sweeps, each Gibbs step scoring the K candidate sequences of one position):
baseline: ``use_cache=False`` scores each of the K candidates whole.
ours: the prefix shared by the K candidates runs once per image; its keys and values are repeated
    K times and only the positions from the edited one on run per candidate (same draws; tested in
    tests/models/test_editing.py).
Time: median over repeats; peak memory: extra resident memory of one call (benchmarks/_memory.py);
both in this process.

Run: python benchmarks/ar_kv_cache.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch

from _timing import median_seconds  # benchmarks/_timing.py
from _memory import fix_malloc, peak_mib  # benchmarks/_memory.py

from modalab.models.editing import ar_edit_region
from modalab.models.unified import UnifiedTransformer

TEXT, CODEBOOK, VOCAB = 10, 64, 32


HEADER = (f"{'tokens':>6} {'batch':>5} | {'no cache s':>10} {'cache s':>9} {'speed-up':>8} | "
          f"{'no cache MiB':>12} {'cache MiB':>9}")


def _model(n: int) -> UnifiedTransformer:
    torch.manual_seed(0)
    return UnifiedTransformer(VOCAB, CODEBOOK, n, dim=96, depth=3, heads=4, max_text=TEXT).eval()


def _row(n: int, b: int, call, reps: int) -> None:
    """One table row: ``call(use_cache)`` without and with the cache (same draws checked)."""
    same = torch.equal(call(True), call(False))
    t_ref, t_new = median_seconds(lambda: call(False), reps), median_seconds(lambda: call(True), reps)
    m_ref, m_new = peak_mib(lambda: call(False)), peak_mib(lambda: call(True))
    flag = "" if same else "  (codes differ!)"
    print(f"{n:>6} {b:>5} | {t_ref:>10.4f} {t_new:>9.4f} {t_ref / t_new:>7.2f}x | "
          f"{m_ref:>12.1f} {m_new:>9.1f}{flag}")


def run(tokens: list[int], batches: list[int], reps: int) -> None:
    print(HEADER)
    for n in tokens:
        m = _model(n)
        for b in batches:
            text = torch.randint(0, VOCAB, (b, TEXT), generator=torch.Generator().manual_seed(1))
            _row(n, b, lambda c: m.generate_codes(text, temperature=1.0, use_cache=c,
                                                  generator=torch.Generator().manual_seed(2)), reps)


def run_editing(tokens: list[int], batches: list[int], reps: int) -> None:
    print("\nregion editing (bottom half of the codes, 2 Gibbs sweeps)")
    print(HEADER)
    for n in tokens:
        m = _model(n)
        region = torch.arange(n) >= n // 2  # (N,) the bottom half in raster order
        for b in batches:
            g0 = torch.Generator().manual_seed(1)
            text = torch.randint(0, VOCAB, (b, TEXT), generator=g0)
            codes = torch.randint(0, CODEBOOK, (b, n), generator=g0)
            _row(n, b, lambda c: ar_edit_region(m, text, None, codes, region, sweeps=2, use_cache=c,
                                                generator=torch.Generator().manual_seed(2)), reps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 and 64 tokens, 2 repeats")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fix_malloc()
    torch.set_grad_enabled(False)
    tokens = [16, 64] if args.quick else [16, 64, 256]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    run(tokens, [1, 32], reps=2 if args.quick else 5)
    run_editing([16], [1, 8], reps=2 if args.quick else 3)
    if not args.quick:
        run_editing([64], [1], reps=3)


if __name__ == "__main__":
    main()
