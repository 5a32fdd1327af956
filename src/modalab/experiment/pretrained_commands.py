"""``modalab zeroshot | export | wise-ft``: evaluate any checkpoint, write it out, interpolate it.

- ``zeroshot --model hf:DIR|open_clip:FILE|RUN_DIR --data MANIFEST [--prompts ...]``: zero-shot
  top-1/top-5 over the manifest's labels and retrieval R@K both ways (open_clip's zero-shot eval,
  for local data); writes a run directory with results.json, per-item predictions and report.html.
- ``export RUN_DIR --to hf|open_clip OUT``: a trained dual encoder in transformers' or open_clip's layout.
- ``wise-ft RUN --alphas 0,0.25,...``: WiSE-FT (Wortsman et al. 2022), theta(alpha) =
  (1 - alpha) theta_pretrained + alpha theta_finetuned, evaluated on the run's held-out split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only the standard library is imported up front (``modalab --help`` stays light)
    import torch
    from PIL import Image

    from modalab.experiment.checkpoint_models import LoadedDualEncoder
    from modalab.experiment.rundir import RunDir

DEFAULT_PROMPTS = ["a photo of a {label}"]


def embed_images(m: LoadedDualEncoder, images: list[Image.Image], batch_size: int) -> torch.Tensor:
    """(N, E) unit-norm image embeddings, in batches."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.stack([m.image(im) for im in images[i : i + batch_size]])  # (B, C, H, W)
            out.append(m.model.encode_image(x).float())
    return torch.cat(out)


def embed_texts(m: LoadedDualEncoder, texts: list[str], batch_size: int) -> torch.Tensor:
    """(N, E) unit-norm text embeddings, in batches."""
    import torch

    with torch.no_grad():
        out = [m.model.encode_text(m.tokenize(texts[i : i + batch_size])).float()
               for i in range(0, len(texts), batch_size)]
    return torch.cat(out)


def evaluate_manifest(m: LoadedDualEncoder, manifest: Path, prompts: list[str], ks: list[int],
                      batch_size: int = 64, split: str | None = None, root: Path | None = None) -> dict[str, Any]:
    """Zero-shot and retrieval metrics of ``m`` on a manifest (optionally one ``split``)."""
    import torch
    from modalab.data.safe_image import open_image
    from modalab.data.sources.manifest import check_image, parse_rows
    from modalab.eval.retrieval import retrieval_metrics
    from modalab.eval.zeroshot import class_embeddings, zeroshot_accuracy

    rows, skipped = [], []
    for row in parse_rows(manifest, root or manifest.parent):
        if split is not None and (row.split or "train") != split:
            continue
        reason = check_image(row)
        if reason is None:
            rows.append(row)
        else:
            skipped.append(f"{manifest}:{row.line}: {reason}: {row.image}")
    if not rows:
        raise ValueError(f"{manifest}: no usable records" + (f" in split {split!r}" if split else ""))
    images = []
    for r in rows:  # size limits checked from the header (data/safe_image.py)
        with open_image(r.image, f"{manifest}:{r.line}: {r.image}") as im:
            images.append(im.copy())
    img = embed_images(m, images, batch_size)
    txt = embed_texts(m, [r.text for r in rows], batch_size)
    res: dict[str, Any] = {"num_items": len(rows), "num_skipped": len(skipped), "skipped": skipped}
    labels = None
    if all(r.label is not None for r in rows):
        classes = sorted({r.label for r in rows})  # type: ignore[type-var]
        labels = torch.tensor([classes.index(r.label) for r in rows])
        cls = class_embeddings(lambda t: embed_texts(m, t, batch_size), classes, prompts)
        res.update(zeroshot_accuracy(img, cls, labels, ks=(1, min(5, len(classes)))))
        if len(classes) < 5:
            res["zeroshot_top5"] = 1.0
        pred = (img @ cls.T).argmax(dim=1)
        res["classnames"] = classes
        res["predictions"] = [{"line": r.line, "label": r.label, "pred": classes[int(p)]} for r, p in zip(rows, pred)]
    res.update(retrieval_metrics(img, txt, labels, "label" if labels is not None else "pair", ks))
    return res


def _new_run(out: str | None, name: str, info: dict[str, Any]) -> RunDir:
    from modalab.experiment.rundir import RunDir, git_commit, now_iso

    run = RunDir.create(Path(out) if out else None, "runs", name)
    run.write_run_info({"name": name, "status": "completed", "created": now_iso(), "git_commit": git_commit(), **info})
    return run


def cmd_zeroshot(args: argparse.Namespace) -> int:
    from modalab.experiment.checkpoint_models import load_any
    from modalab.experiment.report import write_report

    m = load_any(args.model)
    prompts = args.prompts or DEFAULT_PROMPTS
    res = evaluate_manifest(m, Path(args.data), prompts, args.ks, args.batch_size, args.split,
                            Path(args.root) if args.root else None)
    run = _new_run(args.out, "zeroshot", {"recipe": f"zeroshot {args.model}", "model": args.model,
                                          "data": args.data, "prompts": prompts, "split": args.split})
    preds = res.pop("predictions", None)
    if preds is not None:
        run.write_artifact("predictions", preds)
    run.write_results(res)
    write_report(run)
    for k, v in res.items():
        if isinstance(v, float):
            print(f"{k:28s} {v:.4f}")
    print(f"{res['num_items']} items, {res['num_skipped']} skipped; run directory: {run.path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from modalab.experiment.checkpoint_models import load_any
    from modalab.models.pretrained.export import export_hf, export_open_clip
    from modalab.models.pretrained.load import tokenizer_folder

    m = load_any(args.run)
    extras = tokenizer_folder(m.pretrained) if m.pretrained else None
    if args.to == "hf":
        out = export_hf(m.model, Path(args.out), extras)
    else:
        out = export_open_clip(m.model, Path(args.out), m.settings, extras)
    if extras is None:
        print("note: the run's word tokenizer has no Hugging Face equivalent; no tokenizer files written")
    print(f"wrote {out}")
    return 0


def cmd_wise_ft(args: argparse.Namespace) -> int:
    from modalab.experiment.wise_ft import wise_ft

    alphas = [float(a) for a in args.alphas.split(",")]
    run = wise_ft(Path(args.run), alphas, Path(args.out) if args.out else None)
    for row in json.loads((run.path / "results.json").read_text())["curve"]:
        print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"run directory: {run.path}")
    return 0


def _guard(fn):  # type: ignore[no-untyped-def]
    """Checkpoint and data problems end with ``error: ...`` and exit status 2, not a traceback
    (``PretrainedError`` is a ValueError)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run


def add_pretrained_commands(sub: argparse._SubParsersAction) -> None:
    z = sub.add_parser("zeroshot", help="zero-shot accuracy and retrieval of any checkpoint on a manifest")
    z.add_argument("--model", required=True, help="hf:DIR | open_clip:FILE | a contrastive run directory")
    z.add_argument("--data", required=True, help="JSONL/CSV manifest with image, text[, label, split]")
    z.add_argument("--prompts", nargs="+", help="prompt templates with {label} (default: 'a photo of a {label}')")
    z.add_argument("--split", choices=["train", "test"], help="only this split of the manifest (default: all rows)")
    z.add_argument("--root", help="folder the manifest's image paths are relative to")
    z.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10])
    z.add_argument("--batch-size", type=int, default=64)
    z.add_argument("--out", help="run directory (default runs/zeroshot-<timestamp>)")
    z.set_defaults(fn=_guard(cmd_zeroshot))

    e = sub.add_parser("export", help="write a trained dual encoder as a transformers or open_clip checkpoint")
    e.add_argument("run", help="run directory (or hf:DIR / open_clip:FILE to convert between layouts)")
    e.add_argument("--to", choices=["hf", "open_clip"], required=True)
    e.add_argument("out", help="output folder (must not exist)")
    e.set_defaults(fn=_guard(cmd_export))

    w = sub.add_parser("wise-ft", help="WiSE-FT: accuracy of weight-space interpolations pretrained -> fine-tuned")
    w.add_argument("run", help="a contrastive run fine-tuned from model.pretrained")
    w.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="comma-separated mixing weights")
    w.add_argument("--out", help="run directory for the curve (default runs/wise_ft-<timestamp>)")
    w.set_defaults(fn=_guard(cmd_wise_ft))
