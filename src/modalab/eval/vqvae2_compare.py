"""VQ-VAE-2 against single-level VQ at equal total codes, on the sklearn digits (issue 21).

Both tokenizers train the same way as ``eval/tokenizer_sweep.py``'s harness (first 1500 digits at
16x16, L1 + the quantizers' losses, AdamW betas (0.5, 0.9), cosine decay to 0.05 lr, batches of
64 drawn with a seeded generator) and are scored on the last 297 digits (``evaluate_tokenizer``:
PSNR, SSIM, code usage over the whole index space). "Equal total codes" = the same codebook
budget: VQ-VAE-2 with ``K_top = K_bottom = K / 2`` against one VQ codebook of ``K``; the token and
bit counts per image are reported beside them, since the hierarchy adds the top map's tokens.

    python -m modalab.eval.vqvae2_compare --steps 500 --seeds 0 1 2

A quick harness with no val split: it scores the test digits, so use it to look, not to choose. The
comparison of record goes through the tokenizer task (``model.quantizer: vqvae2``), with val / test
splits, the budget check and paired statistics: ``recipes/chapter5/vqvae2_levels.yaml``.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from modalab.eval.reconstruction import evaluate_tokenizer
from modalab.eval.tokenizer_sweep import NUM_TRAIN, digits_images
from modalab.vision.quantizers import VectorQuantizer
from modalab.vision.tokenizer import ImageTokenizer
from modalab.vision.vqvae2 import build_vqvae2


def build(kind: str, codes: int, channels: int = 16, latent_dim: int = 16) -> nn.Module:
    """``single``: one 4x4 map of ``codes`` codes; ``vqvae2``: 2x2 top + 4x4 bottom, ``codes / 2``
    each (16x16 images). EMA codebooks, k-means init and dead-code restarts (threshold 1) in both."""
    if kind == "single":
        q = VectorQuantizer(codes, latent_dim, use_ema=True, kmeans_init=True, dead_code_threshold=1.0)
        return ImageTokenizer(q, in_channels=1, channels=channels, num_down=2, latent_dim=latent_dim)
    if kind == "vqvae2":
        if codes % 2:
            raise ValueError(f"vqvae2_compare: codes={codes} must be even (split between two books)")
        return build_vqvae2(codes // 2, codes // 2, channels=channels, latent_dim=latent_dim)
    raise ValueError(f"vqvae2_compare: kind='{kind}'; expected 'single' or 'vqvae2'")


def train_and_score(kind: str, codes: int, steps: int = 500, seed: int = 0, lr: float = 2e-3,
                    batch_size: int = 64) -> dict[str, float]:
    """Train one tokenizer and return its held-out reconstruction metrics plus budget columns."""
    torch.manual_seed(seed)
    images = digits_images(16)
    train, held_out = images[:NUM_TRAIN], images[NUM_TRAIN:]
    tok = build(kind, codes)
    opt = torch.optim.AdamW(tok.parameters(), lr=lr, betas=(0.5, 0.9), weight_decay=0.0)
    cosine = lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / max(steps, 1)))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    g = torch.Generator().manual_seed(seed)
    t0 = time.process_time()
    tok.train()
    for _ in range(steps):
        x = train[torch.randint(0, len(train), (batch_size,), generator=g)]  # (B, 1, 16, 16)
        recon, _, aux = tok(x)
        loss = F.l1_loss(recon, x) + aux["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    m = evaluate_tokenizer(tok, held_out)
    n_tok = tok.tokens_per_image(16, 16)
    bits = (4 * math.log2(codes // 2) + 16 * math.log2(codes // 2)) if kind == "vqvae2" \
        else n_tok * math.log2(codes)
    m.update(kind=kind, total_codes=codes, bits_per_image=bits, train_cpu_seconds=time.process_time() - t0,
             seed=seed, steps=steps)
    return m


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codes", type=int, nargs="+", default=[128])
    p.add_argument("--kinds", nargs="+", default=["single", "vqvae2"])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    for codes in a.codes:
        for kind in a.kinds:
            for seed in a.seeds:
                print(json.dumps(train_and_score(kind, codes, a.steps, seed)), flush=True)


if __name__ == "__main__":
    main()
