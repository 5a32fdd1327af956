"""Is the unified model's diffusion decoder under-trained? (issue 21)

Loads a finished ``recipes/unified_digits.yaml`` run, freezes everything but the diffusion
denoiser, and continues training the denoiser alone (the recipe's epsilon loss, condition
dropout ``p_uncond``, AdamW) on the training split, with the shared transformer's text states as
a fixed condition. Every ``--eval-every`` steps it scores the raw weights and an EMA copy on the
VALIDATION split (FID against the real validation images with the run's cached feature CNN,
class-match by the RBF-SVM judge) at each ``--guidance``. If the decoder is under-trained, the
class-match at low guidance rises with steps and the FID at the guidance that reaches the
class-match target falls.

    python benchmarks/unified_denoiser_budget.py --run /tmp/unified_latents --steps 2000
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from unified_diffusion_diag import load_run, sample, split_tensors  # noqa: E402

from modalab.eval.feature_net import FeatureNetConfig, cached_feature_net  # noqa: E402
from modalab.eval.generation import fid  # noqa: E402
from modalab.eval.judge import ClassJudge  # noqa: E402
from modalab.text.tokenizer import PAD  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--guidance", default="1,2,3")
    ap.add_argument("--ddim-steps", type=int, default=50)
    ap.add_argument("--weights", default="raw,ema", help="which weights to score: raw, ema or both")
    ap.add_argument("--skip-initial-eval", action="store_true", help="step 0 is the checkpoint itself "
                    "(unified_diffusion_diag.py scores it)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe, data, tok, model, ckpt = load_run(args.run)
    (trx, try_, trt), (vax, vay, vat) = split_tensors(data.train), split_tensors(data.val)
    seed = recipe.run.seed
    net = cached_feature_net(trx, try_, FeatureNetConfig(steps=recipe.eval.feature_net_steps, seed=seed),
                             args.run / "eval_nets")
    judge = ClassJudge()
    judge.fit(trx, try_)
    real = net.embed(vax)
    diff, tr = model.diffusion, model.transformer
    with torch.no_grad():
        ids = tok(trt)  # (N, T)
        pad = ids == PAD
        cond = tr.text_condition(ids, pad)  # (N, T + 1, D)
        cpad = tr._prompt_pad(pad, cond.shape[1])  # (N, T + 1)
    x0 = trx * 2 - 1  # (N, 1, H, W) in [-1, 1]
    ema = copy.deepcopy(diff.denoiser).requires_grad_(False)
    opt = torch.optim.AdamW(diff.denoiser.parameters(), lr=args.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    guid = [float(v) for v in args.guidance.split(",")]

    def evaluate(step: int, cpu: float) -> None:
        live = diff.denoiser
        for name, den in (("raw", live), ("ema", ema)):
            if name not in args.weights.split(","):
                continue
            diff.denoiser = den.eval()
            for gs in guid:
                gen = sample(model, tok, vat, {"steps": args.ddim_steps, "guidance": gs}, 0)
                print(json.dumps({"step": step, "weights": name, "guidance": gs, "split": "val",
                                  "fid_val": fid(real, net.embed(gen)),
                                  "class_match_val": judge.class_match(gen, vay),
                                  "train_cpu_s": round(cpu, 1)}), flush=True)
        diff.denoiser = live.train()

    print(json.dumps({"run": str(args.run), "checkpoint": str(ckpt), "lr": args.lr, "batch": args.batch,
                      "ema": args.ema, "fid_floor_hint": "see unified_diffusion_diag.py"}), flush=True)
    if not args.skip_initial_eval:
        evaluate(0, 0.0)
    cpu = 0.0
    diff.denoiser.train()
    for step in range(1, args.steps + 1):
        t0 = time.process_time()
        idx = torch.randint(len(x0), (args.batch,), generator=g)
        loss = diff.loss(x0[idx], cond[idx], cpad[idx], p_uncond=recipe.loss.p_uncond, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), diff.denoiser.parameters()):
                pe.lerp_(p, 1 - args.ema)
        cpu += time.process_time() - t0
        if step % args.eval_every == 0:
            evaluate(step, cpu)


if __name__ == "__main__":
    main()
