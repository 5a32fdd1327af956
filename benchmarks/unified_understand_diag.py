"""Why does the unified model understand less well than the captioner? (issue 21)

Cheap, understanding-only experiments on the digits' validation split (never the test split):

1. probes: how much class information survives the frozen tokenizer? A logistic regression on
   the one-hot VQ codes (N x K features), on the continuous pre-quantization latents, and on the
   raw pixels (fitted on train, scored on val).
2. understanding-only training of a fresh ``UnifiedTransformer`` (the recipe's size, dropout and
   learning rate) on ``understand_loss`` alone, with the images' codes as input (a) as-is and (b)
   from randomly shifted images (augmentation of the understanding items only), reporting the
   greedy-caption accuracy on train and val every ``--eval-every`` steps: a train/val gap says
   overfitting, a low ceiling says the input lacks the information; (c) ``latents``: the
   tokenizer encoder's continuous latents (before quantization) through a learned projection.

    python benchmarks/unified_understand_diag.py --steps 1200 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from modalab.data.sources.digits import NAMES, TEMPLATES, DigitsConfig, build_digits, caption
from modalab.data.transforms import MEAN, STD
from modalab.models.unified import UnifiedTransformer
from modalab.models.unified_builder import UnifiedConfig, build_unified_model, train_tokenizer_branch
from modalab.tasks.caption import class_mentions
from modalab.text.tokenizer import EOS, PAD, WordTokenizer


def split_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([(s.image * STD + MEAN).clamp(0, 1) for s in items])  # (N, 1, H, W) in [0, 1]
    return x, torch.tensor([s.label for s in items])


def shift_batch(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Each image (B, C, H, W) translated by its own random offset in [-s, s]^2 (replicate border)."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s), mode="replicate")  # (B, C, H + 2s, W + 2s)
    off = torch.randint(0, 2 * s + 1, (b, 2), generator=g)
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(off.tolist())])


def probe(train_f: torch.Tensor, train_y: torch.Tensor, val_f: torch.Tensor, val_y: torch.Tensor) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000, C=1.0).fit(train_f.numpy(), train_y.numpy())
    return float(clf.score(val_f.numpy(), val_y.numpy()))


@torch.no_grad()
def accuracy(tr: UnifiedTransformer, codes: torch.Tensor, labels: torch.Tensor, tok: WordTokenizer,
             context: int, feats: torch.Tensor | None = None) -> float:
    tr.eval()
    out = tr.answer(codes, context, eos_id=EOS, features=feats)
    tr.train()
    hits = [class_mentions(tok.decode(r), NAMES) == {y} for r, y in zip(out.tolist(), labels.tolist())]
    return sum(hits) / len(hits)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--eval-every", type=int, default=300)
    ap.add_argument("--variants", default="codes,shift1")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = UnifiedConfig(name="unified", text_context=10,
                        tokenizer={"codebook_size": 64, "token_grid": 4, "channels": 16, "latent_dim": 16,
                                   "dead_code_threshold": 1.0, "pretrain_steps": 400},
                        transformer={"dim": 128, "depth": 4, "heads": 4, "dropout": args.dropout})
    data = build_digits(DigitsConfig(source="digits", image_size=16, augment=False), seed=args.seed)
    tok = WordTokenizer.build(data.texts, cfg.text_context)
    (trx, try_), (vax, vay) = split_tensors(data.train), split_tensors(data.val)
    model = build_unified_model(cfg, text_vocab=tok.vocab_size, image_size=16, channels=1)
    t0 = time.process_time()
    pre = train_tokenizer_branch(model.tokenizer, trx, cfg.tokenizer, seed=args.seed)
    vq = model.tokenizer.requires_grad_(False).eval()
    out: dict = {"seed": args.seed, "tokenizer": pre, "num_train": len(trx), "num_val": len(vax)}
    with torch.no_grad():
        tr_codes, va_codes = vq.encode(trx).flatten(1), vq.encode(vax).flatten(1)  # (N, 16)
        lat = lambda x: vq.encoder(x).flatten(1)  # (N, D * 16) pre-quantization latents
        K = vq.codebook_size
        onehot = lambda c: F.one_hot(c, K).float().flatten(1)  # (N, 16 K)
        out["probe_val"] = {
            "onehot_codes": probe(onehot(tr_codes), try_, onehot(va_codes), vay),
            "latents": probe(lat(trx), try_, lat(vax), vay),
            "pixels": probe(trx.flatten(1), try_, vax.flatten(1), vay),
        }
    print(json.dumps(out), flush=True)
    for variant in args.variants.split(","):
        shift = int(variant[5:]) if variant.startswith("shift") else 0
        g = torch.Generator().manual_seed(args.seed)
        torch.manual_seed(args.seed)
        latents = variant == "latents"
        tr = UnifiedTransformer(tok.vocab_size, K, 16, dim=128, depth=4, heads=4, max_text=10,
                                dropout=args.dropout, feature_dim=cfg.tokenizer.latent_dim if latents else None)
        feat = (lambda x: model.image_features(x)) if latents else (lambda x: None)  # (B, N, D)
        opt = torch.optim.AdamW(tr.parameters(), lr=args.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
        curve, t1 = [], time.process_time()
        for step in range(1, args.steps + 1):
            idx = torch.randint(len(trx), (64,), generator=g)
            temps = torch.randint(len(TEMPLATES), (64,), generator=g).tolist()
            text = tok([caption(int(y), t) for y, t in zip(try_[idx].tolist(), temps)])
            with torch.no_grad():
                xb = shift_batch(trx[idx], shift, g)
                codes = vq.encode(xb).flatten(1)
            loss = tr.understand_loss(codes, text, text == PAD, feat(xb))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tr.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % args.eval_every == 0:
                curve.append({"step": step, "loss": round(float(loss.detach()), 4),
                              "train_acc": accuracy(tr, tr_codes[:300], try_[:300], tok, 10, feat(trx[:300])),
                              "val_acc": accuracy(tr, va_codes, vay, tok, 10, feat(vax))})
                print(variant, curve[-1], flush=True)
        out[variant] = {"curve": curve, "cpu_seconds": time.process_time() - t1}
    out["cpu_seconds_total"] = time.process_time() - t0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
