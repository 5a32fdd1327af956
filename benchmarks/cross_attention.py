"""Cross-attention and connector cost: SDPA vs naive attention, resampler vs all media tokens.

Part 1: text queries (B, H, T, Dh) attend to media keys of growing length S, forward + backward.
    naive: softmax(Q K^T / sqrt(d)) V, materialising the (B, H, T, S) scores.
    ours:  layers.attention (F.scaled_dot_product_attention), same masks.
    Time: median over repeats; peak memory: extra resident memory of one forward + backward
    (Linux: reset VmHWM through /proc/self/clear_refs, then VmHWM - VmRSS before); both in this process.
Part 2: a frozen encoder's N media tokens reach a 4-layer decoder either all of them (MLP
    connector, prefix of N tokens) or through a Perceiver resampler (prefix of 64 latents).

Run: python benchmarks/cross_attention.py [--quick]
"""

from __future__ import annotations

import argparse

import torch

from _timing import median_seconds  # benchmarks/_timing.py
from _memory import fix_malloc, peak_mib  # benchmarks/_memory.py

from modalab.layers.attention import naive_attention
from modalab.fusion.connectors import mlp
from modalab.fusion.resampler import PerceiverResampler
from modalab.text.decoder import TextDecoder

B, H, T, DH = 2, 8, 128, 64


def _attn_inputs(s: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, DH, generator=g, requires_grad=True)
    k = torch.randn(B, H, s, DH, generator=g, requires_grad=True)
    v = torch.randn(B, H, s, DH, generator=g, requires_grad=True)
    mask = torch.ones(B, 1, 1, s, dtype=torch.bool)
    mask[0, ..., s - s // 4 :] = False  # a padded media sequence
    return q, k, v, mask


def _run_attn(impl: str, q, k, v, mask) -> None:
    if impl == "naive":
        out = naive_attention(q, k, v, mask)
    else:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out.sum().backward()


def part1(lengths: list[int], reps: int) -> None:
    print(f"\n## SDPA vs naive cross-attention, fwd+bwd, B={B} H={H} T={T} Dh={DH}, float32, 1 thread")
    print(f"{'S':>7} {'naive ms':>9} {'sdpa ms':>8} {'speedup':>8} {'naive MiB':>10} {'sdpa MiB':>9} {'mem ratio':>9}")
    for s in lengths:
        args = _attn_inputs(s)
        t_naive = median_seconds(lambda: _run_attn("naive", *args), reps) * 1e3
        t_sdpa = median_seconds(lambda: _run_attn("sdpa", *args), reps) * 1e3
        m_naive = peak_mib(lambda: _run_attn("naive", *args))
        m_sdpa = peak_mib(lambda: _run_attn("sdpa", *args))
        print(
            f"{s:>7} {t_naive:>9.1f} {t_sdpa:>8.1f} {t_naive / t_sdpa:>7.2f}x "
            f"{m_naive:>10.1f} {m_sdpa:>9.1f} {m_naive / max(m_sdpa, 0.1):>8.2f}x"
        )


def part2(media_lengths: list[int], reps: int) -> None:
    dv, dt, text_len, latents = 256, 256, 32, 64
    torch.manual_seed(0)
    dec = TextDecoder(vocab_size=1000, dim=dt, depth=4, heads=4, max_len=max(media_lengths) + text_len + 1)
    proj = mlp(dv, dt)
    res = PerceiverResampler(dv, dim=dv, depth=2, heads=4, head_dim=64, num_latents=latents, out_dim=dt)
    tokens = torch.randint(0, 1000, (B, text_len))
    print(f"\n## Resampler vs all media tokens into a 4-layer decoder (dim {dt}), fwd+bwd, B={B}, text {text_len}")
    print(f"{'media N':>8} {'all: tokens':>11} {'ms':>8} {'resampler: tokens':>17} {'ms':>8} {'speedup':>8}")
    for n in media_lengths:
        media = torch.randn(B, n, dv)

        def run_all() -> None:
            prefix, _ = proj(media)
            dec(tokens, prefix=prefix).sum().backward()

        def run_res() -> None:
            prefix, _ = res(media)
            dec(tokens, prefix=prefix).sum().backward()

        t_all, t_res = median_seconds(run_all, reps) * 1e3, median_seconds(run_res, reps) * 1e3
        print(f"{n:>8} {n + text_len:>11} {t_all:>8.1f} {latents + text_len:>17} {t_res:>8.1f} {t_all / t_res:>7.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    a = ap.parse_args()
    torch.set_num_threads(1)
    fix_malloc()
    if a.quick:
        part1([256, 1024], reps=2)
        part2([256], reps=1)
    else:
        part1([512, 2048, 8192, 32768], reps=3)
        part2([256, 1024, 4096], reps=2)


if __name__ == "__main__":
    main()
