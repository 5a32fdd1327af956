"""modalab's dual encoder against open_clip's, built from one config, step for step.

open_clip depends on torchvision, which modalab must not, so this runs in a separate,
benchmark-only environment outside the repository. Commands used on 2026-12-07 (torch 2.13.0,
the CPU build modalab uses; PyPI's torchvision wheel is built against CUDA torch, so its C ops do
not load on the CPU build and the two modules that register their fake/autograd kernels are
skipped — open_clip's models call no torchvision op)::

    python3 -m venv /work/bench-venv
    /work/bench-venv/bin/pip install torch==2.13.0 regex ftfy tqdm huggingface-hub safetensors pyyaml
    /work/bench-venv/bin/pip install --no-deps torchvision==0.28.0 open_clip_torch==3.3.0 timm
    python3 - <<'PY'   # torchvision/__init__.py: import the op registrations only where the ops loaded
    p = "/work/bench-venv/lib/python3.11/site-packages/torchvision/__init__.py"; s = open(p).read()
    s = s.replace("from torchvision import (\n    _autograd_registrations,\n    _meta_registrations,\n",
                  "if extension._has_ops():\n    from torchvision import _autograd_registrations, _meta_registrations\n"
                  "from torchvision import (\n")
    open(p, "w").write(s)
    PY
    /work/bench-venv/bin/pip install -e .                  # modalab (its torch requirement is met)
    /work/bench-venv/bin/python benchmarks/vs_open_clip.py --sizes vits16 --compile --rounds 3

(2026-12-06 used torch 2.14.1 and torchvision 0.29.1 from PyPI, the CUDA wheels.)

Without open_clip the script says so and still times modalab's side.

What is compared, per size (digits / ViT-S/16 / ViT-B/16), precision (fp32 / bf16 autocast) and
thread count (1 / 2):

- the same architecture in both libraries from one ``Size`` (pre-norm ViT with a class token and
  learned positions, a causal text transformer pooled at the end-of-text token, bias-free
  projections, a learnable temperature); parameter counts must agree within 1% and both towers
  see the same ``(B, context_length)`` token tensor;
- one training step each: forward of both towers, the symmetric InfoNCE loss (modalab's
  ``align.losses.info_nce``, open_clip's ``ClipLoss``), backward, AdamW step — on the same
  pre-made tensors, in alternating order (reversed every other round), medians over rounds;
- ``--compile``: a second modalab model (same seed, same weights) with its blocks compiled as
  ``train.compile: true`` does, timed beside the eager one (open_clip stays eager, as its users run
  it); the compile happens before the first round (its time is printed) and each precision's first
  warm-up step absorbs any recompilation;
- ``modalab+data``: modalab's whole loop with its data pipeline (the digits source resized to
  the size's resolution, tokenizer, collate, epoch sampler), as a ratio to modalab's bare step
  on the same task model: the loader's share.

Prints one table row per (size, precision, threads) with samples/s and the ratio
modalab / open_clip (median of per-round ratios).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clip_digits.yaml"


@dataclass(frozen=True)
class Size:
    image: int
    patch: int
    v_width: int
    v_depth: int
    v_heads: int
    t_width: int
    t_depth: int
    t_heads: int
    context: int
    vocab: int
    embed: int
    mlp_ratio: float
    batch: int


SIZES = {  # digits: the default recipe's scale (issue 24); ViT-S/16 and ViT-B/16 as in open_clip
    "digits": Size(16, 4, 96, 3, 4, 96, 2, 4, 8, 64, 64, 2.0, 128),
    "vits16": Size(224, 16, 384, 12, 6, 384, 12, 6, 77, 49408, 384, 4.0, 32),
    "vitb16": Size(224, 16, 768, 12, 12, 512, 12, 8, 77, 49408, 512, 4.0, 32),
}


def build_modalab(s: Size) -> torch.nn.Module:
    from modalab.models.two_tower import TextTowerConfig, TwoTowerConfig, VisionTowerConfig, build_two_tower

    cfg = TwoTowerConfig(
        name="two_tower", embed_dim=s.embed,
        vision=VisionTowerConfig(patch_size=s.patch, width=s.v_width, depth=s.v_depth, heads=s.v_heads,
                                 mlp_ratio=s.mlp_ratio),
        text=TextTowerConfig(context_length=s.context, width=s.t_width, depth=s.t_depth, heads=s.t_heads,
                             mlp_ratio=s.mlp_ratio, pool="eos"),
    )
    return build_two_tower(cfg, image_size=s.image, in_channels=3, vocab_size=s.vocab)


def build_open_clip(s: Size) -> torch.nn.Module:
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=s.v_depth, width=s.v_width, head_width=s.v_width // s.v_heads,
                           mlp_ratio=s.mlp_ratio, patch_size=s.patch, image_size=s.image)
    text = CLIPTextCfg(context_length=s.context, vocab_size=s.vocab, width=s.t_width, heads=s.t_heads,
                       layers=s.t_depth, mlp_ratio=s.mlp_ratio)
    return CLIP(s.embed, vision, text)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def make_inputs(s: Size, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, S, S) and tokens (B, L): ids in [1, vocab - 2], end-of-text (vocab - 1, the
    highest id, which open_clip's argmax pooling finds) at a random length, zero padding after."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(s.batch, 3, s.image, s.image, generator=g)
    tokens = torch.randint(1, s.vocab - 1, (s.batch, s.context), generator=g)
    lengths = torch.randint(2, s.context + 1, (s.batch,), generator=g)
    pos = torch.arange(s.context)[None]
    tokens = torch.where(pos < lengths[:, None] - 1, tokens, 0)
    tokens[torch.arange(s.batch), lengths - 1] = s.vocab - 1
    return images, tokens


def modalab_step(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from modalab.align.losses import info_nce

    def loss(images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        out = model(images, tokens)
        return info_nce(out["image_emb"], out["text_emb"], out["logit_scale"])

    return loss


def open_clip_step(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from open_clip.loss import ClipLoss

    crit = ClipLoss()

    def loss(images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        img, txt, scale = model(images, tokens)
        return crit(img, txt, scale)

    return loss


def timed(loss_fn: Callable[..., torch.Tensor], params: list[torch.nn.Parameter], batches: Callable[[], Any],
          steps: int, precision: str, warmup: int = 1) -> float:
    """Samples/s of ``steps`` forward+backward+AdamW steps (after ``warmup`` untimed ones)."""
    opt = torch.optim.AdamW(params, lr=1e-4)
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    n = 0
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            t0, n = time.perf_counter(), 0
        args = batches()
        opt.zero_grad(set_to_none=True)
        with amp():
            loss = loss_fn(*args)
        loss.backward()
        opt.step()
        n += len(args[0])
    return n / (time.perf_counter() - t0)


def pipeline(size_name: str, s: Size) -> tuple[torch.nn.Module, Callable[[], Any], Callable[..., torch.Tensor]]:
    """modalab's contrastive task on the digits source at this size: model, batch iterator, step."""
    from modalab import config, registry
    from modalab.experiment.rundir import RunDir

    def infinite(loader: Any) -> Any:  # a new shuffle each epoch
        while True:
            yield from loader

    over = [f"data.image_size={s.image}", "data.channels=3", "data.augment=false",
            f"model.vision.patch_size={s.patch}", f"model.vision.width={s.v_width}",
            f"model.vision.depth={s.v_depth}", f"model.vision.heads={s.v_heads}",
            f"model.vision.mlp_ratio={s.mlp_ratio}", f"model.text.width={s.t_width}",
            f"model.text.depth={s.t_depth}", f"model.text.heads={s.t_heads}",
            f"model.text.mlp_ratio={s.mlp_ratio}", f"model.text.context_length={s.context}",
            "model.text.pool=eos", f"model.embed_dim={s.embed}", f"train.batch_size={s.batch}"]
    recipe = config.load(RECIPE, over)
    import tempfile

    run = RunDir.create(Path(tempfile.mkdtemp()), "/tmp", f"bench-{size_name}")
    task = registry.build("task", recipe.task, recipe, run)
    it = infinite(task.train_loader())
    return task.model, lambda: (next(it),), lambda batch: task.step(batch)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["digits", "vits16", "vitb16"], choices=list(SIZES))
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0, help="timed steps per round (0: 20 digits, 3 ViT)")
    ap.add_argument("--no-pipeline", action="store_true", help="skip the modalab+data variant")
    ap.add_argument("--compile", action="store_true",
                    help="modalab with train.compile (its blocks compiled by inductor); open_clip eager")
    args = ap.parse_args()
    try:
        import open_clip  # noqa: F401

        have_oc = True
    except ImportError as e:
        have_oc = False
        print(f"open_clip is not installed here ({e}); timing modalab only. See the commands at the "
              f"top of this file for the benchmark environment.")
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    head = ("| size | precision | threads | modalab samples/s | open_clip samples/s | modalab / open_clip "
            "| modalab+data / modalab bare |")
    rule = "|---|---|---:|---:|---:|---:|---:|"
    if args.compile:
        head += " modalab compiled samples/s | compiled / open_clip |"
        rule += "---:|---:|"
    print(head)
    print(rule)
    for name in args.sizes:
        s = SIZES[name]
        steps = args.steps or (20 if name == "digits" else 3)
        torch.manual_seed(0)
        ml = build_modalab(s)
        images, tokens = make_inputs(s)
        assert tokens.shape == (s.batch, s.context)
        impls: dict[str, tuple[Callable, list, Callable]] = {
            "modalab": (modalab_step(ml), list(ml.parameters()), lambda: (images, tokens)),
        }
        if args.compile:  # a second copy, compiled as train.compile=true does; warm-up steps compile
            from modalab.layers import Block
            from modalab.train.compile import block_modules, compile_blocks

            torch.manual_seed(0)
            mc = build_modalab(s)
            compile_blocks(block_modules(mc, (Block,)))
            t0 = time.perf_counter()
            timed(modalab_step(mc), list(mc.parameters()), lambda: (images, tokens), 1, "fp32", warmup=1)
            print(f"<!-- {name}: first compiled fp32 steps (compile included) {time.perf_counter() - t0:.1f} s -->",
                  flush=True)
            impls["modalab compiled"] = (modalab_step(mc), list(mc.parameters()), lambda: (images, tokens))
        counts = f"modalab {n_params(ml):,} params"
        if have_oc:
            oc = build_open_clip(s)
            a, b = n_params(ml), n_params(oc)
            counts += f", open_clip {b:,} ({100 * (a - b) / b:+.2f}%)"
            if abs(a - b) > 0.01 * b:
                raise SystemExit(f"{name}: parameter counts differ by more than 1%: {counts}")
            assert oc.context_length == ml.text_encoder.context_length == tokens.shape[1]
            impls["open_clip"] = (open_clip_step(oc), list(oc.parameters()), lambda: (images, tokens))
        if not args.no_pipeline:
            pm, batches, step = pipeline(name, s)
            first = batches()[0]
            counts += (f"; pipeline batch tokens {tuple(first.tokens.shape)}, images "
                       f"{tuple(first.images.shape)}")
            impls["modalab+data"] = (step, list(pm.parameters()), batches)
            impls["modalab bare (task model)"] = (step, list(pm.parameters()), lambda f=first: (f,))
        print(f"<!-- {name}: {counts}; text tokens per sample {s.context} in both -->", flush=True)
        for prec in args.precisions:
            for th in args.threads:
                torch.set_num_threads(th)
                res: dict[str, list[float]] = {k: [] for k in impls}
                order = list(impls)
                for r in range(args.rounds):
                    for k in (order if r % 2 == 0 else order[::-1]):
                        fn, params, batches = impls[k]
                        res[k].append(timed(fn, params, batches, steps, prec))
                med = {k: statistics.median(v) for k, v in res.items()}
                ratio = (statistics.median(a / b for a, b in zip(res["modalab"], res["open_clip"]))
                         if "open_clip" in res else float("nan"))
                share = (statistics.median(a / b for a, b in zip(res["modalab+data"],
                                                                  res["modalab bare (task model)"]))
                         if "modalab+data" in res else float("nan"))
                comp = ""
                if "modalab compiled" in res:
                    c_ratio = (statistics.median(a / b for a, b in zip(res["modalab compiled"], res["open_clip"]))
                               if "open_clip" in res else float("nan"))
                    comp = f" {med['modalab compiled']:.1f} | {c_ratio:.2f}x |"
                print(f"| {name} | {prec} | {th} | {med['modalab']:.1f} | "
                      f"{med.get('open_clip', float('nan')):.1f} | {ratio:.2f}x | {share:.2f}x |{comp}", flush=True)


if __name__ == "__main__":
    main()
