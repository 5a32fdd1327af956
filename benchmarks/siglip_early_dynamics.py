"""The first steps of a contrastive recipe: where do the image-text cosines go?

    python benchmarks/siglip_early_dynamics.py recipes/clip_digits_siglip.yaml --steps 11

Trains the recipe's model for a few steps as the runner does (its optimizer, parameter groups,
warm-up, grad clip 1.0, clamp) and prints, every ``--every`` steps on the current batch: the loss,
the logit scale t and bias b, the bias gradient, and the mean cosine of positive pairs, of
same-label pairs and of the other pairs, plus the mean image-image cosine.

What it showed for SigLIP on the digits (issue 20, seed 0, recipes/clip_digits_siglip.yaml at
commit 9559956, 5acfcec before the rebase; docs/benchmarks.md, 2026-12-06): at initialisation the
image embeddings are
nearly parallel (image-image cosine 0.98), and within 5 steps every image-text cosine sits at 0.50
whatever the pair, i.e. every logit at t * 0.5 + b = -5 ~ log(1/127), the prior of a batch of 128
with one positive per row. The embeddings absorb the prior that the bias (-10, the paper's value
for 32k batches) is too slow to learn; the bias gradient then averages ~0 and b stays near -10.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile

import torch

from modalab import registry
from modalab.align.losses import same_label_mask
from modalab.config import load
from modalab.experiment.rundir import RunDir
from modalab.train.optim import (
    GroupRule, build_optimizer, clip_gradients, grad_norm, lr_multiplier, param_groups, set_lr,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--steps", type=int, default=11)
    ap.add_argument("--every", type=int, default=5)
    args = ap.parse_args()
    recipe = load(args.recipe, args.overrides)
    torch.manual_seed(recipe.run.seed)
    torch.set_num_threads(1)
    run = RunDir.create(tempfile.mkdtemp(), "runs", "early")
    task = registry.build("task", "contrastive", recipe, run)
    m, o = task.model, recipe.optim
    rules = [GroupRule(g.pattern, g.lr, g.weight_decay) for g in o.param_groups]
    opt = build_optimizer(o.name, param_groups(m, o.lr, o.weight_decay, rules), o.betas, o.eps, o.momentum)
    batches = itertools.chain.from_iterable(task.train_loader() for _ in range(1000))
    for step in range(args.steps):
        batch = next(batches)
        set_lr(opt, lr_multiplier(step, recipe.train.steps, o.warmup_steps, o.schedule, o.min_lr_ratio))
        opt.zero_grad(set_to_none=True)
        loss, _ = task.step(batch)
        loss.backward()
        params = [p for p in m.parameters() if p.requires_grad]
        gb = float(m.logit_bias.grad) if m.logit_bias is not None else float("nan")
        clip_gradients(params, recipe.train.grad_clip or float("inf"), grad_norm(params))
        opt.step()
        task.after_step(step)
        if step % args.every and step != args.steps - 1:
            continue
        with torch.no_grad():
            out = m(batch.images, batch.tokens)
            sim = out["image_emb"] @ out["text_emb"].T  # (B, B)
            ii = out["image_emb"] @ out["image_emb"].T  # (B, B)
            eye = torch.eye(sim.shape[0], dtype=torch.bool)
            same = same_label_mask(batch.labels)
            b = float(m.logit_bias) if m.logit_bias is not None else 0.0
        print(f"step {step:3d}  loss {loss.item():6.2f}  t {task.logit_scale().item():5.2f}  b {b:6.2f}  "
              f"db {gb:+.3f}  cos: positive {sim[eye].mean():.3f}  same-label {sim[same].mean():.3f}  "
              f"other {sim[~same & ~eye].mean():.3f}  image-image {ii[~eye].mean():.3f}", flush=True)


if __name__ == "__main__":
    main()
