"""The pieces of a run report that read at a glance: headline metrics first, monitors grouped and
explained, training and validation curves, and qualitative examples.

``report.py`` assembles the page; everything here takes plain data read from the run directory
(``results.json``, ``metrics.jsonl`` records, artifacts) and returns HTML or a PNG data URI.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from modalab._optional import lazy

# pyplot on the Agg backend, imported when the first figure is drawn
plt = lazy("matplotlib.pyplot", setup=lambda: __import__("matplotlib").use("Agg"))

# what a reader looks at first, in this order (a task's own metrics follow)
HEADLINE = (
    "zeroshot_top1", "zeroshot_top5",
    "image_to_text_R@1", "image_to_text_R@5", "image_to_text_R@10",
    "text_to_image_R@1", "text_to_image_R@5", "text_to_image_R@10",
    "image_to_text_mean_rank", "text_to_image_mean_rank",
)
RUN_FACTS = ("steps", "skipped_steps", "num_train", "num_test", "num_skipped", "num_params", "wall_seconds",
             "train_seconds", "samples_per_s", "tau_final", "logit_scale_final", "logit_scale_at_clamp", "eval_match")

# monitor families: (title, key prefixes, what they mean)
MONITOR_GROUPS = (
    ("Similarity of pairs", ("sim_",),
     "Cosine similarity of matched (pos) and unmatched (neg) image-text pairs on the held-out split, "
     "mean and quantiles. sim_margin = pos mean - neg mean: larger means better separated."),
    ("Collapse", ("erank_", "std_"),
     "Effective rank of each modality's embeddings (exp of the entropy of the singular values; frac = "
     "rank / D) and per-dimension std. A small rank or a std near 0 means the embeddings collapsed."),
    ("Geometry", ("modality_gap", "alignment", "uniformity"),
     "modality_gap: distance between the image and text centroids (ratio: against its first value). "
     "alignment: mean squared distance of matched pairs (lower is better). uniformity: log mean "
     "exp(-2 d^2) over pairs of one modality (lower is more uniform)."),
    ("Temperature", ("logit_scale", "tau"),
     "The learned logit scale 1/tau; the chapter advises tau in [0.01, 0.1]."),
)


def fig_to_data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


def _rows(items: list[tuple[str, Any]]) -> str:
    return "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in items)


def split_results(results: dict[str, Any]) -> tuple[list, list, dict[str, list]]:
    """(headline, run facts, {monitor group title: items}) from ``results.json``; lists and dicts
    (examples, skipped inputs) are left out of the tables."""
    scalars = {k: v for k, v in results.items() if not isinstance(v, (list, dict))}
    headline = [(k, scalars[k]) for k in HEADLINE if k in scalars]
    monitors: dict[str, list] = {}
    facts, task_own = [], []
    for k, v in scalars.items():
        if k in HEADLINE:
            continue
        if k.startswith("monitor/"):
            name = k[len("monitor/"):]
            group = next((t for t, prefixes, _ in MONITOR_GROUPS if name.startswith(prefixes)), "Other monitors")
            monitors.setdefault(group, []).append((name, v))
        elif k in RUN_FACTS:
            facts.append((k, v))
        else:
            task_own.append((k, v))
    return headline + task_own, facts, monitors


def results_section(results: dict[str, Any]) -> str:
    """Headline metrics (a task's own metrics after the standard ones), then run facts, then the
    monitors folded by family with what each family means."""
    headline, facts, monitors = split_results(results)
    out = [f'<table class="headline">{_rows(headline)}</table>' if headline else "<p>no metrics</p>"]
    if facts:
        out.append(f"<h3>Data and run</h3><table>{_rows(facts)}</table>")
    if monitors:
        out.append("<h3>Alignment monitors (held-out split)</h3>")
        helps = {t: h for t, _, h in MONITOR_GROUPS}
        for title, items in monitors.items():
            help_text = helps.get(title, "Other diagnostics the task logged.")
            out.append(f"<details><summary><b>{html.escape(title)}</b> ({len(items)}): "
                       f"{html.escape(help_text)}</summary><table>{_rows(items)}</table></details>")
    return "".join(out)


def curves(records: list[dict[str, Any]], keys: list[str], title: str, ylabel: str,
           logy: bool = False) -> str | None:
    """One panel with a line per key in ``keys`` (only keys that were logged); None when none was."""
    series = {}
    for key in keys:
        pts = [(r["step"], r[key]) for r in records
               if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
               and isinstance(r.get("step"), int)]
        if pts:
            series[key] = pts
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for key, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 40 else None,
                ms=3, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7)
    return fig_to_data_uri(fig)


def validation_keys(records: list[dict[str, Any]]) -> list[str]:
    """The ``val_`` metrics worth a curve: zero-shot accuracy and R@1 (or a task's accuracy)."""
    keys: list[str] = []
    for r in records:
        for k in r:
            if (k.startswith("val_") and not k.startswith("val_monitor/") and k not in keys
                    and (k.endswith(("_R@1", "_top1", "accuracy", "_mAP")))):
                keys.append(k)
    return keys


def training_panels(metrics: list[dict[str, Any]]) -> list[str]:
    """Loss, learning rate, temperature, grad norm, throughput, and validation curves."""
    train = [m for m in metrics if "loss" in m and "event" not in m]
    evals = [m for m in metrics if any(k.startswith("val_") for k in m)]
    final = [m for m in metrics if m.get("event") == "final"]
    if evals and final:  # the final evaluation (same held-out split) ends the validation curves
        evals.append({"step": final[-1].get("step"), **{f"val_{k}": v for k, v in final[-1].items()
                                                          if k not in ("step", "event")}})
    figs = [
        curves(train, ["loss"], "training loss", "loss"),
        curves(evals, validation_keys(evals), "validation during training (held-out split)", "metric"),
        curves(train, ["grad_norm"], "gradient norm (before clipping)", "grad norm", logy=True),
        curves(train, ["samples_per_s"], "throughput", "samples / s"),
        curves(train, ["logit_scale"], "logit scale (1/tau)", "logit scale"),
        curves(train, ["lr"], "learning rate", "lr"),
    ]
    return [f for f in figs if f]


def _thumb_uri(pixels: list) -> str:
    import numpy as np
    from PIL import Image

    a = np.asarray(pixels, dtype=np.uint8)  # (C, h, w)
    img = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
    scale = max(1, 64 // max(img.size))
    img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def retrieval_examples_html(art: dict[str, Any]) -> str:
    """Held-out images with their top-k retrieved captions; correct ones marked."""
    cards = []
    for ex in art.get("examples", []):
        img = f'<img class="thumb" src="{_thumb_uri(ex["image"])}" alt="test image {ex["index"]}">' \
            if ex.get("image") else ""
        items = "".join(
            f'<li class="{"ok" if t["correct"] else "bad"}">{"✓" if t["correct"] else "✗"} '
            f'{html.escape(str(t["text"]))} <span class="score">{t["score"]:.2f}</span></li>'
            for t in ex["top"])
        cards.append(f'<div class="card">{img}<div><div class="cap">#{ex["index"]}: '
                     f'{html.escape(str(ex["caption"]))}</div><ol>{items}</ol></div></div>')
    rule = ("same label as the image" if art.get("match") == "label" else "the image's own caption")
    return (f"<p>Top-{art.get('k', '?')} captions retrieved by held-out images (✓ = correct: "
            f"{rule}; score = cosine similarity).</p><div class=\"cards\">{''.join(cards)}</div>")


def captions_html(examples: list[dict[str, Any]]) -> str:
    """Generated captions next to the label they should mention (captioning tasks)."""
    rows = "".join(f"<tr><td>{html.escape(str(e.get('label', '')))}</td><td>{html.escape(str(e.get('caption', '')))}"
                   f"</td></tr>" for e in examples)
    return f"<table><tr><th>label</th><th>generated caption</th></tr>{rows}</table>"


CSS = """.headline td{font-size:1.05em}.headline td:first-child{font-weight:600}
details{margin:.3em 0}summary{cursor:pointer;font-size:.9em}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:10px}
.card{display:flex;gap:8px;border:1px solid #ddd;padding:6px;font-size:.8em}
.thumb{width:64px;height:64px;image-rendering:pixelated;border:1px solid #ccc}
.card ol{margin:.2em 0;padding-left:1.4em}.ok{color:#070}.bad{color:#b00}.score{color:#888}
.cap{font-weight:600}"""
