"""Why is the unified model's diffusion FID 244 when AR's is 16.7? (issue 21)

Loads a finished ``recipes/unified_digits.yaml`` run (its config.yaml and final checkpoint) and
re-samples the diffusion path under several sampler settings, scoring every set on the
VALIDATION split only (never the test split): the prompts are the validation captions, the
reference is the real validation images, both embedded by the run's own cached feature CNN
(``eval_nets/``, trained on the training split). The floor beside it is real-vs-real at the same
sample size (as many real training images as validation images, against the validation images).

    python benchmarks/unified_diffusion_diag.py --run /tmp/unified_latents \
        --settings "steps=50,guidance=5;steps=50,guidance=1;steps=250,guidance=2"

A setting is ``key=value`` pairs of ``GaussianDiffusion.ddim_sample`` (steps, guidance, eta, clip,
guidance_interval=LO-HI, guidance_rescale) or ``path=ar`` for the AR path. Prints one JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from modalab import config as recipe_config
from modalab.data.sources.digits import build_digits
from modalab.data.transforms import MEAN, STD
from modalab.eval.feature_net import FeatureNetConfig, cached_feature_net
from modalab.eval.generation import fid, precision_recall
from modalab.eval.judge import ClassJudge
from modalab.models.unified_builder import build_unified_model
from modalab.text.tokenizer import PAD, WordTokenizer


def split_tensors(ds) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([(s.media * STD + MEAN).clamp(0, 1) for s in items])  # (N, 1, H, W) in [0, 1]
    return x, torch.tensor([s.label for s in items]), [s.text for s in items]


def parse_setting(text: str) -> dict:
    out: dict = {}
    for kv in filter(None, text.split(",")):
        k, _, v = kv.partition("=")
        parse = {"steps": int, "guidance": float, "eta": float, "path": str,
                 "clip": lambda s: s.lower() in ("1", "true", "yes"),
                 "guidance_interval": lambda s: tuple(int(p) for p in s.split("-")),
                 "guidance_rescale": float}
        if k not in parse:
            raise ValueError(f"--settings: unknown key '{k}' in '{text}'; expected one of {sorted(parse)}")
        out[k] = parse[k](v)
    return out


def load_run(run: Path):
    recipe = recipe_config.load(run / "config.yaml")
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    if not ckpts:
        raise FileNotFoundError(f"{run}/checkpoints: no step_* checkpoint; run the recipe to the end first")
    d = recipe.data
    data = build_digits(d, seed=recipe.run.seed)
    tok = WordTokenizer.build(data.texts, recipe.model.text_context)
    model = build_unified_model(recipe.model, text_vocab=tok.vocab_size, image_size=d.image_size, channels=1)
    state = load_file(str(ckpts[-1] / "model.safetensors"))
    state = {k.removeprefix("model."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "alpha_bar" not in m]:
        raise RuntimeError(f"{ckpts[-1]}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return recipe, data, tok, model.eval(), ckpts[-1]


@torch.no_grad()
def sample(model, tok, prompts: list[str], setting: dict, seed: int, batch: int = 256) -> torch.Tensor:
    g, out = torch.Generator().manual_seed(seed), []
    kw = dict(setting)
    path = kw.pop("path", "diffusion")
    if path == "ar":
        kw = {"temperature": kw.get("temperature", 0.3)}
    for i in range(0, len(prompts), batch):
        text = tok(prompts[i : i + batch])
        out.append(model("generate", text=text, text_pad=text == PAD, path=path, generator=g, **kw))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--settings", default="steps=50,guidance=5")
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", type=Path, default=None, help="write each setting's images here (.pt)")
    ap.add_argument("--test-once", default=None, metavar="SETTING",
                    help="score the setting chosen on val on the TEST split, as the task does (first "
                         "eval.generate_samples test captions, eval/generation_report.py); AR beside it")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe, data, tok, model, ckpt = load_run(args.run)
    if args.test_once:
        return test_once(args, recipe, data, tok, model, ckpt)
    (trx, try_, _), (vax, vay, vat) = split_tensors(data.train), split_tensors(data.val)
    seed = recipe.run.seed
    net = cached_feature_net(trx, try_, FeatureNetConfig(steps=recipe.eval.feature_net_steps, seed=seed),
                             args.run / "eval_nets")
    judge = ClassJudge()
    judge.fit(trx, try_)
    real = net.embed(vax)  # (N_val, F)
    pick = torch.randperm(len(trx), generator=torch.Generator().manual_seed(seed))[: len(vax)]
    head = {"run": str(args.run), "checkpoint": str(ckpt), "split": "val", "n": len(vax),
            "fid_floor_train_vs_val_same_n": fid(real, net.embed(trx[pick])),
            "real_val_pixel_std": float(vax.std()), "real_val_frac_gt_095": float((vax > 0.95).float().mean())}
    print(json.dumps(head), flush=True)
    saved = {}
    for text in args.settings.split(";"):
        setting = parse_setting(text)
        t0 = time.process_time()
        gen = sample(model, tok, vat, setting, args.sample_seed)
        cpu = time.process_time() - t0
        feats = net.embed(gen)
        row = {"setting": text, "fid_val": fid(real, feats), **precision_recall(real, feats),
               "class_match_val": judge.class_match(gen, vay), "pixel_std": float(gen.std()),
               "frac_gt_095": float((gen > 0.95).float().mean()),
               "cpu_s_per_image": cpu / len(vat)}
        print(json.dumps(row), flush=True)
        saved[text] = gen
    if args.save:
        torch.save(saved, args.save)


def test_once(args, recipe, data, tok, model, ckpt) -> None:
    """The chosen setting on the test split, scored like ``tasks/unified.py``'s final evaluation."""
    from modalab.eval.generation_report import generation_report
    from modalab.eval.score_encoder import ScoreEncoderConfig

    (trx, try_, trt), (tex, tey, tet) = split_tensors(data.train), split_tensors(data.test)
    seed, n = recipe.run.seed, min(recipe.eval.generate_samples, len(tet))
    setting = parse_setting(args.test_once)
    judge = ClassJudge()
    judge.fit(trx, try_)
    gen, res = {}, {"run": str(args.run), "checkpoint": str(ckpt), "split": "test", "setting": args.test_once}
    for path, s in (("ar", {"path": "ar", "temperature": recipe.eval.ar_temperature}),
                    ("diffusion", setting)):
        t0, c0 = time.perf_counter(), time.process_time()
        gen[path] = sample(model, tok, tet[:n], s, seed)
        res[f"sample_seconds_per_image_{path}"] = (time.perf_counter() - t0) / n
        res[f"sample_cpu_seconds_per_image_{path}"] = (time.process_time() - c0) / n
        res[f"generate_class_match_{path}"] = judge.class_match(gen[path], tey[:n])
    e = recipe.eval
    cache = Path(tempfile.mkdtemp(prefix="unified_diag_"))  # the run's eval nets copied; the run dir is never written
    for f in (args.run / "eval_nets").glob("*.safetensors"):
        shutil.copy(f, cache / f.name)
    res.update(generation_report(
        train=(trx, tok(trt), try_), test=(tex, tok(tet), tey), generated=gen, prompts=(tok(tet[:n]), tey[:n]),
        vocab_size=tok.vocab_size, cache_dir=cache, seed=seed,
        feature_cfg=FeatureNetConfig(steps=e.feature_net_steps, seed=seed),
        score_cfg=ScoreEncoderConfig(steps=e.score_encoder_steps, seed=seed)))
    print(json.dumps(res), flush=True)
    if args.save:
        torch.save(gen, args.save)


if __name__ == "__main__":
    main()
