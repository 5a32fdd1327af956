"""WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", 2022) for a fine-tuned run.

theta(alpha) = (1 - alpha) * theta_pretrained + alpha * theta_finetuned, for every floating-point
weight (the temperature and bias included). alpha = 0 is the checkpoint the run started from
(``model.pretrained``), alpha = 1 the run's final weights. Each mix is evaluated by the run's own
task on the run's held-out split, exactly as the run evaluated itself.

When the held-out split has classes that no training row has (e.g. a manifest whose ``split``
column keeps some labels out of fine-tuning), the curve also reports zero-shot top-1 on the
classes seen in training and on the unseen ones: the in-domain gain and the zero-shot retention.

Choosing alpha is model selection: pick it on a validation split, not on the split reported
(the curve written here is on the run's held-out split; the run's recipe decides which that is).
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any

import torch

from modalab import registry
from modalab.experiment.rundir import RunDir, git_commit, now_iso

KEYS = ("zeroshot_top1", "zeroshot_top5", "image_to_text_R@1", "text_to_image_R@1",
        "zeroshot_top1_seen", "zeroshot_top1_unseen")


def train_classes(task: Any) -> set[int] | None:
    """Labels of the training split (None when the split cannot be listed, e.g. streamed shards)."""
    train = task.data.train
    if not hasattr(train, "__len__") or not hasattr(train, "__getitem__") or not task.data.classnames:
        return None
    labels = (train[i].label for i in range(len(train)))  # loads each training sample once
    return {int(y) for y in labels if y is not None}


@torch.no_grad()
def seen_unseen(task: Any, seen: set[int]) -> dict[str, float]:
    """Zero-shot top-1 on held-out items whose class is / is not among the training labels."""
    from modalab.eval.zeroshot import class_embeddings, predict

    img, _, labels, _ = task.embed(task.data.test)
    if labels is None:
        return {}
    dev = task.model.logit_scale.device
    cls = class_embeddings(lambda t: task.model.encode_text(task.tokenizer(t).to(dev)).cpu(),
                           task.data.classnames, task.eval_cfg.prompts)
    hit = predict(img, cls) == labels
    is_seen = torch.tensor([int(y) in seen for y in labels])
    out = {}
    for name, mask in (("seen", is_seen), ("unseen", ~is_seen)):
        if mask.any():
            out[f"zeroshot_top1_{name}"] = hit[mask].double().mean().item()
    return out


def interpolate(pre: dict[str, torch.Tensor], fine: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * pre + alpha * fine for floating tensors; others (integer buffers) from ``fine``."""
    if set(pre) != set(fine):
        raise ValueError(f"the two state dicts differ in keys: {sorted(set(pre) ^ set(fine))[:5]}")
    return {k: torch.lerp(pre[k], fine[k], alpha) if fine[k].is_floating_point() else fine[k] for k in fine}


def wise_ft(run_dir: Path, alphas: list[float], out: Path | None = None) -> RunDir:
    """Evaluate the mixes; returns the run directory holding results.json (``curve``) and report.html."""
    from modalab.config import load
    from modalab.train.checkpoint import latest_valid, load_weights

    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"alphas must be in [0, 1], got {alphas}")
    recipe = load(run_dir / "config.yaml")
    if recipe.task != "contrastive" or not getattr(recipe.model, "pretrained", None):
        raise ValueError(f"{run_dir}: WiSE-FT needs a contrastive run fine-tuned from model.pretrained")
    ckpt = latest_valid(run_dir / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir}: no valid checkpoint under checkpoints/")
    run = RunDir.create(out, "runs", "wise_ft")
    with tempfile.TemporaryDirectory() as tmp:  # the task's own logs of each evaluation go here
        task = registry.build("task", recipe.task, recipe, RunDir(Path(tmp)))
        pre = {k: v.detach().clone() for k, v in task.model.state_dict().items()}  # the loaded checkpoint
        load_weights(ckpt, task.model)
        fine = {k: v.detach().clone() for k, v in task.model.state_dict().items()}
        curve: list[dict[str, Any]] = []
        seen = train_classes(task)
        split_classes = seen is not None and len(seen) < len(task.data.classnames)
        for a in alphas:
            task.model.load_state_dict(interpolate(pre, fine, a))
            res = task.evaluate(final=False)
            if split_classes:
                res.update(seen_unseen(task, seen))
            curve.append({"alpha": a, **{k: float(res[k]) for k in KEYS if k in res}})
    run.write_run_info({"name": "wise_ft", "status": "completed", "created": now_iso(), "git_commit": git_commit(),
                        "recipe": f"wise-ft {run_dir}", "source_run": str(run_dir),
                        "pretrained": recipe.model.pretrained, "seed": recipe.run.seed})
    run.write_results({"split": "the source run's held-out split", "source_run": str(run_dir), "curve": curve,
                       "unseen_classes": sorted(task.data.classnames[i] for i in range(len(task.data.classnames))
                                                if seen is not None and i not in seen)})
    (run.path / "report.html").write_text(render(run_dir, curve), encoding="utf-8")
    return run


def render(run_dir: Path, curve: list[dict[str, Any]]) -> str:
    from modalab.experiment.report import CSS, fig_to_data_uri, plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    xs = [c["alpha"] for c in curve]
    for k in KEYS:
        if all(k in c for c in curve):
            ax.plot(xs, [c[k] for c in curve], marker="o", label=k)
    ax.set_xlabel("alpha (0 = pretrained, 1 = fine-tuned)")
    ax.set_ylabel("held-out metric")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    cols = ["alpha", *[k for k in KEYS if all(k in c for c in curve)]]
    rows = "".join("<tr>" + "".join(f"<td>{c[k]:.4f}</td>" for k in cols) + "</tr>" for c in curve)
    head = "".join(f"<td><b>{html.escape(k)}</b></td>" for k in cols)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>modalab: WiSE-FT</title>
<style>{CSS}</style></head><body><h1>WiSE-FT of {html.escape(str(run_dir))}</h1>
<p>Weight-space mixes (1 - alpha) * pretrained + alpha * fine-tuned, evaluated on the run's held-out split.
Choose alpha on a validation split, not on this one.</p>
<table><tr>{head}</tr>{rows}</table><div class="figs"><img src="{fig_to_data_uri(fig)}" alt="accuracy vs alpha"></div>
</body></html>"""
