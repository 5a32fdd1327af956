"""The ``modalab`` command line: run | list, plus the experiment layer's commands
(``experiment/commands.py``).

Only the standard library is imported up front: ``modalab --help`` and ``modalab list`` (which
reads the registrations from source, ``registry.declared_entries``) never import torch or the
modality libraries; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from modalab import registry
from modalab.catalog_cli import add_catalog_commands
from modalab.errors import ModalabError, ResumeError, clip
from modalab.experiment.commands import add_commands
from modalab.experiment.pretrained_commands import add_pretrained_commands

HEADLINE_KEYS = (
    "zeroshot_top1",
    "zeroshot_top5",
    "image_to_text_R@1",
    "image_to_text_R@5",
    "text_to_image_R@1",
    "text_to_image_R@5",
    "image_to_text_mean_rank",
    "text_to_image_mean_rank",
    "num_train",
    "num_test",
    "num_skipped",
    "wall_seconds",
)


def headline_keys(results: dict, limit: int = 12) -> list[str]:
    """The metrics ``modalab run`` prints: the retrieval headline keys when the task reports them,
    else the task's own scalar test metrics (audio tagging, captioning, video...), up to ``limit``."""
    skip = lambda k: k.startswith(("num_", "val_")) or k.endswith("_seconds") or k == "steps"  # noqa: E731
    keys = [k for k in HEADLINE_KEYS if k in results and not skip(k)]
    if keys:
        return keys
    scalar = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    return sorted(k for k, v in results.items() if scalar(v) and not skip(k))[:limit]


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_run(args: argparse.Namespace) -> int:
    from modalab.config import load
    from modalab.experiment.runner import run

    if args.restart and not args.resume:
        raise ResumeError("--restart only applies with --resume (it starts a resumed run over when no "
                          "valid checkpoint is left)")
    recipe = load(args.recipe, args.overrides)
    if args.dry_run:
        print(recipe.to_yaml(), end="")
        return 0
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:  # hand over to torchrun
        from modalab.train.dist import torchrun_command

        rest = [args.recipe, *args.overrides]
        rest += ["--out", args.out] if args.out else []
        rest += ["--resume"] if args.resume else []
        rest += ["--restart"] if args.restart else []
        cmd = torchrun_command(args.nproc, ["run", *rest])
        if recipe.train.ddp.gloo_socket_ifname and "GLOO_SOCKET_IFNAME" not in os.environ:
            os.environ["GLOO_SOCKET_IFNAME"] = recipe.train.ddp.gloo_socket_ifname  # one machine: loopback
        print("launching:", " ".join(cmd), file=sys.stderr, flush=True)
        os.execvp(cmd[0], cmd)
    out = run(recipe, Path(args.out) if args.out else None, str(args.recipe), args.overrides,
              resume=args.resume, restart=args.restart)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 prints
        return 0
    results = json.loads((out / "results.json").read_text())
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
    has_val = "val" in results.get("eval_splits", [])
    rows = [(k, *([fmt(results.get(f"val_{k}"))] if has_val else []), fmt(results[k]))
            for k in headline_keys(results)]
    print("\nresults (" + ("val = validation split, used for choices; " if has_val else "no validation split; ")
          + "test = held-out test split, reported once):")
    print(_table([("metric", *(["val"] if has_val else []), "test"), *rows]))
    counts = [f"{k}={fmt(results[k])}" for k in ("num_train", "num_val", "num_test", "num_skipped", "wall_seconds")
              if k in results]
    print("  " + "  ".join(counts))
    print(f"\nrun directory: {out}")
    return 0


def cmd_shards_write(args: argparse.Namespace) -> int:
    from modalab.data.dataset import DataError
    from modalab.data.tar_shards import manifest_samples, write_shards

    if args.format == "webdataset":  # the standard layout: brace-named tars, no index file
        return _write_webdataset(args)
    if args.digits:
        from modalab.data.sources.shards import write_digits_shards

        if args.out_dir is not None:
            raise DataError(f"shards write --digits OUT_DIR takes one folder, got {args.manifest!r} "
                            f"and {args.out_dir!r}")
        out = Path(args.manifest)
        for split, idx in write_digits_shards(out, args.size, args.test_fraction, args.seed).items():
            n = sum(s["count"] for s in idx["shards"])
            print(f"wrote {n} {split} samples in {len(idx['shards'])} shard(s) to {out / split}")
        return 0
    if args.out_dir is None:
        raise DataError("shards write: give MANIFEST OUT_DIR, or --digits OUT_DIR for the built-in digits")
    index = write_shards(manifest_samples(Path(args.manifest), args.root), Path(args.out_dir), args.size)
    n = sum(s["count"] for s in index["shards"])
    print(f"wrote {n} samples in {len(index['shards'])} shard(s) to {args.out_dir}")
    return 0


def _write_webdataset(args: argparse.Namespace) -> int:
    from modalab.data.dataset import DataError
    from modalab.data.tar_shards import manifest_samples
    from modalab.data.sources.shards import digits_samples
    from modalab.data.sources.webdataset import write_webdataset

    if args.digits:
        if args.out_dir is not None:
            raise DataError(f"shards write --digits OUT_DIR takes one folder, got {args.manifest!r} "
                            f"and {args.out_dir!r}")
        for split, samples in digits_samples(args.test_fraction, args.seed).items():
            print(f"wrote {len(samples)} {split} samples: "
                  f"{write_webdataset(samples, Path(args.manifest) / split, args.size)}")
        return 0
    if args.out_dir is None:
        raise DataError("shards write: give MANIFEST OUT_DIR, or --digits OUT_DIR for the built-in digits")
    print(f"wrote {write_webdataset(manifest_samples(Path(args.manifest), args.root), Path(args.out_dir), args.size)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    current = None
    for kind, name, description in registry.declared_entries(args.kind):
        if kind != current:
            current = kind
            print(f"{kind}:")
        print(f"  {name:<28} {description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modalab", description="multimodal post-training experiments")
    p.add_argument("--traceback", action="store_true",
                   help="show the full Python traceback of an error (also: MODALAB_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and evaluate one recipe")
    r.add_argument("recipe", help="path to a YAML recipe, or a packaged recipe's name (modalab recipes list)")
    r.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.steps=20")
    r.add_argument("--out", help="run directory (default: runs/<name>-<timestamp>)")
    r.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    r.add_argument("--nproc", type=int, default=1,
                   help="processes on this machine: runs `torchrun --nproc-per-node N -m modalab run ...`")
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --out (or the newest runs/<name>-*) from its latest valid checkpoint")
    r.add_argument("--restart", action="store_true",
                   help="with --resume: when no valid checkpoint is left, start over at step 0 in the same "
                        "folder (metrics.jsonl is truncated)")
    r.set_defaults(fn=cmd_run)
    sh = sub.add_parser("shards", help="WebDataset-format tar shards")
    shs = sh.add_subparsers(dest="shards_command", required=True)
    sw = shs.add_parser("write", help="write tar shards from a JSONL/CSV manifest (or --digits OUT_DIR)")
    sw.add_argument("manifest", help="manifest with image, text[, label, split] columns (with --digits: OUT_DIR)")
    sw.add_argument("out_dir", nargs="?", help="folder for shard-NNNNNN.tar and shards.json")
    sw.add_argument("--digits", action="store_true",
                    help="write the built-in handwritten digits as OUT_DIR/train and OUT_DIR/test")
    sw.add_argument("--test-fraction", type=float, default=0.25, help="with --digits: held-out share")
    sw.add_argument("--seed", type=int, default=0, help="with --digits: split seed")
    sw.add_argument("--size", type=int, default=1000, help="samples per shard")
    sw.add_argument("--root", help="folder image paths are relative to (default: the manifest's)")
    sw.add_argument("--format", choices=["modalab", "webdataset"], default="modalab",
                    help="modalab: shard-NNNNNN.tar + shards.json (data.source=shards); webdataset: "
                         "data-NNNNNN.tar only, as webdataset/img2dataset write them (data.source=webdataset)")
    sw.set_defaults(fn=cmd_shards_write)
    ls = sub.add_parser("list", help="list registered components")
    ls.add_argument("kind", nargs="?", help="only this kind (e.g. loss, model, source, task)")
    ls.set_defaults(fn=cmd_list)
    add_commands(sub)  # sweep | compare | report | doctor (experiment layer)
    add_pretrained_commands(sub)  # zeroshot | export | wise-ft (checkpoints in and out)
    add_catalog_commands(sub)  # recipes list | show | cp, explain
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may follow options (``run R --out D train.steps=5``); anything else is an error
    stray = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    from modalab.experiment.signals import apply_parent_death_signal

    apply_parent_death_signal()  # a sweep's child dies with its sweep (Linux)
    return run_command(args.fn, args, debug=args.traceback or os.environ.get("MODALAB_DEBUG", "") not in ("", "0"))


def run_command(fn, args: argparse.Namespace, debug: bool = False) -> int:  # type: ignore[no-untyped-def]
    """The one error path: a modalab error (or a file / OS error) prints one line and returns 2;
    an interruption prints one line and returns 128 + the signal number (130 for Ctrl-C).
    ``debug`` re-raises instead, so the full traceback shows."""
    from modalab.experiment.signals import Interrupted

    try:
        return fn(args)
    except BrokenPipeError:  # e.g. `modalab compare ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ModalabError, OSError) as e:
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if debug:
            raise
        signum = e.signum if isinstance(e, Interrupted) else 2
        print(f"interrupted ({_one_line(e) or 'Ctrl-C'})", file=sys.stderr)
        return 128 + signum


def _one_line(e: BaseException) -> str:
    """The message of ``e`` (its type for an OS error without one), bounded in length."""
    text = str(e) or type(e).__name__
    if "\nOriginal Traceback" in text:  # re-raised from a DataLoader worker: keep the worker's message
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(type(e).__module__) else last
    if isinstance(e, OSError) and not isinstance(e, ModalabError) and type(e).__name__ not in text:
        text = f"{type(e).__name__}: {text}"
    return clip(text, 2000)


if __name__ == "__main__":
    raise SystemExit(main())
