"""Train image tokenizers on the sklearn digits and report reconstruction metrics (a sweep harness).

``train_tokenizer(...)`` is the function a recipe task calls: it builds the quantizer and the
tokenizer, trains with the VQGAN objective (GAN and perceptual terms optional), evaluates on the
held-out digits and returns ``psnr``, ``ssim``, ``codebook_usage``, ``perplexity`` and
``tokens_per_image`` (plus a few extras: ``bits_per_image``, ``codebook_size``, ``final_rec_loss``,
``train_seconds``, ``split``).

Data: ``sklearn.datasets.load_digits`` (1797 images of 8x8, values 0-16), scaled to [0, 1] and
upsampled bilinearly to ``image_size``. Splits (``digits_splits``): the last 297 digits are TEST;
``val_fraction`` of the first 1500 (stratified by label, chosen by the seed) is VAL; the rest
trains. ``split="val"`` (the default) scores on val: use it for every choice. ``split="test"``
scores the test digits: run it once, for the settings chosen on val.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from modalab.eval.reconstruction import evaluate_tokenizer
from modalab.train.engine import LoopConfig, SecondOptimizer, fit
from modalab.vision.quantizers import build_quantizer
from modalab.vision.tokenizer import ImageTokenizer
from modalab.vision.vqgan import PatchDiscriminator, StructuralLoss, VQGANLoss

NUM_TRAIN = 1500  # the first 1500 digits are train + val; the last 297 are test
SPLITS = ("val", "test")


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[Tensor, tuple[int, ...]]:
    """sklearn's digits once per process: images (N, 1, 8, 8) in [0, 1] and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0, tuple(int(t) for t in d.target)


def digits_images(image_size: int = 16) -> Tensor:
    """All 1797 digits as (N, 1, image_size, image_size) float32 in [0, 1]."""
    x = _digits_raw()[0].clone()  # (N, 1, 8, 8)
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.clamp(0, 1)


def digits_splits(image_size: int = 16, seed: int = 0, val_fraction: float = 0.1) -> dict[str, Tensor]:
    """``{"train", "val", "test"}`` digits (N, 1, S, S): test = the last 297, val = ``val_fraction``
    of the first 1500 (stratified by label, by ``seed``), train = the rest of the first 1500."""
    from modalab.data.dataset import carve_val

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"digits_splits: val_fraction={val_fraction}; expected 0 < val_fraction < 1")
    images, labels = digits_images(image_size), _digits_raw()[1]
    tr, va = carve_val(range(NUM_TRAIN), val_fraction, seed, labels=labels)
    return {"train": images[tr], "val": images[va], "test": images[NUM_TRAIN:]}


def train_tokenizer(
    quantizer: str = "vq",
    codebook_size: int = 256,
    fsq_levels: list[int] | None = None,
    image_size: int = 16,
    num_down: int = 2,
    channels: int = 16,
    latent_dim: int = 16,
    code_dim: int | None = None,
    l2_normalize: bool = False,
    use_ema: bool = True,
    kmeans_init: bool = True,
    dead_code_threshold: float = 1.0,
    steps: int = 500,
    batch_size: int = 64,
    lr: float = 2e-3,
    rec_loss: str = "l1",
    perceptual_weight: float = 0.0,
    use_gan: bool = False,
    disc_start: int = 250,
    disc_weight: float = 0.5,
    seed: int = 0,
    split: str = "val",
    val_fraction: float = 0.1,
    num_threads: int | None = None,
    log: Callable[[int, dict], None] | None = None,
    log_every: int = 50,
) -> dict[str, float]:
    """Train a tokenizer on the training digits for ``steps`` steps; metrics on ``split``.

    ``split``: "val" (choices) or "test" (once, at the end). ``log(step, logs)`` is called every
    ``log_every`` steps with the loss terms.
    """
    if split not in SPLITS:
        raise ValueError(f"train_tokenizer: split={split!r}; expected one of {SPLITS} (tune on val)")
    if num_threads:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    data = digits_splits(image_size, seed, val_fraction)
    train, held_out = data["train"], data[split]
    vq_kwargs = {}
    if quantizer == "vq":
        vq_kwargs = dict(code_dim=code_dim, l2_normalize=l2_normalize, use_ema=use_ema,
                         kmeans_init=kmeans_init, dead_code_threshold=dead_code_threshold)
    q = build_quantizer(quantizer, latent_dim, codebook_size, fsq_levels, **vq_kwargs)
    tok = ImageTokenizer(q, in_channels=1, channels=channels, num_down=num_down,
                         latent_dim=latent_dim)
    n_layers = 1 if image_size < 16 else 2  # 8x8 inputs are too small for two stride-2 layers
    disc = PatchDiscriminator(1, channels, n_layers=n_layers) if use_gan else None
    perceptual = StructuralLoss() if perceptual_weight > 0 else None
    objective = VQGANLoss(disc, perceptual, rec_loss=rec_loss, perceptual_weight=perceptual_weight,
                          disc_weight=disc_weight, disc_start=disc_start)
    opt = torch.optim.AdamW([{"params": list(tok.parameters()), "lr": lr, "base_lr": lr}],
                            betas=(0.5, 0.9), weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=lr, betas=(0.5, 0.9)) if disc else None

    gen = torch.Generator().manual_seed(seed)

    def batches():
        while True:
            yield train[torch.randint(0, len(train), (batch_size,), generator=gen)]  # (B, 1, H, W)

    state: dict = {"logs": {}, "last": None}

    def step_fn(x: Tensor) -> tuple[Tensor, dict[str, float]]:
        recon, _, aux = tok(x)
        loss, logs = objective.generator_loss(x, recon, aux["loss"], state["step"], tok.last_layer)
        if "usage" in aux:
            logs.update(batch_usage=float(aux["usage"]), batch_perplexity=float(aux["perplexity"]))
        state["logs"], state["last"] = logs, (x, recon.detach())
        return loss, {}

    def disc_loss(x: Tensor, step: int) -> tuple[Tensor, dict[str, float]] | None:
        if not objective.disc_active(step):
            return None
        d_loss, d_logs = objective.discriminator_loss(*state["last"], step)
        state["logs"] = {**state["logs"], **d_logs}
        return d_loss, {}

    def after_step(step: int) -> dict[str, float]:
        if log is not None and (step % log_every == 0 or step == steps - 1):
            logs = state["logs"]
            usage = {k: logs.pop(k) for k in ("batch_usage", "batch_perplexity") if k in logs}
            log(step, {**logs, **usage})  # generator terms, discriminator terms, code usage
        state["step"] = step + 1
        return {}

    state["step"] = 0
    start = time.perf_counter()
    # AdamW with a cosine decay to 0.05 lr; generator step, then discriminator step (train/engine)
    loop = LoopConfig(steps=steps, schedule="cosine", min_lr_ratio=0.05, grad_clip=None,
                      log_every=max(steps, 1), progress=False)
    fit(tok, batches(), step_fn, opt, loop, log=lambda rec: None, after_step=after_step,
        second=SecondOptimizer(opt_d, disc_loss) if opt_d is not None else None)
    logs = state["logs"]
    seconds = time.perf_counter() - start

    metrics = evaluate_tokenizer(tok, held_out)
    metrics.update(codebook_size=tok.codebook_size or 0, split=split, num_eval=len(held_out),
                   final_rec_loss=logs.get("rec", float("nan")), train_seconds=seconds)
    return metrics


def main(argv: list[str] | None = None) -> None:
    """Sweep codebook sizes from the command line and print a markdown table of the metrics."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quantizer", default="vq", choices=["vq", "fsq", "continuous"])
    p.add_argument("--codebook-sizes", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--num-down", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="val", choices=SPLITS,
                   help="val for choices; test once, for the settings chosen on val")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    print(f"split: {a.split}")
    print("| quantizer | K | tokens/img | PSNR | SSIM | usage | perplexity | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for k in a.codebook_sizes:
        m = train_tokenizer(quantizer=a.quantizer, codebook_size=k, image_size=a.image_size,
                            num_down=a.num_down, steps=a.steps, batch_size=a.batch_size,
                            seed=a.seed, split=a.split, num_threads=a.threads)
        print(f"| {a.quantizer} | {m['codebook_size']} | {m['tokens_per_image']} | "
              f"{m['psnr']:.2f} | {m['ssim']:.4f} | {m['codebook_usage']:.3f} | "
              f"{m['perplexity']:.1f} | {m['train_seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
