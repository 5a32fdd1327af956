"""A self-contained HTML report of one run: plots embedded as PNG data URIs, no network needed.

Everything is read back from the run directory (config.yaml, metrics.jsonl, results.json,
artifacts/), so ``modalab report RUN_DIR`` can redraw it at any time.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from modalab.experiment.rundir import RunDir  # noqa: E402
from modalab.train.checkpoint import atomic_write_text  # noqa: E402


def fig_to_data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def curve(metrics: list[dict[str, Any]], key: str, title: str, logy: bool = False) -> str | None:
    pts = [(m["step"], m[key]) for m in metrics if key in m and isinstance(m[key], (int, float))]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 40 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    return fig_to_data_uri(fig)


def heatmap(art: dict[str, Any]) -> str:
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(art["sim"], cmap="viridis", aspect="equal")
    fig.colorbar(im, ax=ax, label="cosine similarity")
    ax.set_xlabel("test captions")
    ax.set_ylabel("test images")
    labels, names = art.get("labels"), art.get("classnames")
    if labels is not None and names:
        ticks = [i for i in range(len(labels)) if i == 0 or labels[i] != labels[i - 1]]
        ax.set_yticks(ticks, [names[labels[i]] for i in ticks], fontsize=7)
        ax.set_xticks(ticks, [names[labels[i]] for i in ticks], fontsize=7, rotation=90)
    ax.set_title("image-text similarity (held-out, sorted by label)")
    return fig_to_data_uri(fig)


def histogram(art: dict[str, Any]) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.hist(art["negative"], bins=60, alpha=0.6, density=True, label="negative pairs")
    ax.hist(art["positive"], bins=60, alpha=0.6, density=True, label="positive pairs")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.legend()
    ax.set_title("similarity distributions (held-out)")
    return fig_to_data_uri(fig)


def results_table(results: dict[str, Any]) -> str:
    rows = []
    for k, v in results.items():
        if isinstance(v, (list, dict)):
            continue
        shown = f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))
        rows.append(f"<tr><td>{html.escape(k)}</td><td>{shown}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse}td{border:1px solid #ccc;padding:3px 8px;font-size:.9em}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs img{max-width:540px;border:1px solid #eee}
pre{background:#f6f6f6;padding:1em;font-size:.8em;overflow:auto}.warn{color:#a40}"""


def render(run: RunDir) -> str:
    metrics = run.read_metrics()
    results = run.read_results()
    info = run.read_run_info()
    config = (run.path / "config.yaml").read_text() if (run.path / "config.yaml").is_file() else ""
    train = [m for m in metrics if "loss" in m and "event" not in m]
    figs = [
        curve(train, "loss", "training loss"),
        curve(train, "logit_scale", "logit scale (1/tau)"),
        curve(train, "lr", "learning rate"),
    ]
    evals = [m for m in metrics if any(k.endswith("_R@1") for k in m)]
    figs.append(curve(evals, "image_to_text_R@1", "image->text R@1 during training"))
    heat = run.read_artifact("similarity_heatmap")
    if heat:
        figs.append(heatmap(heat))
    dist = run.read_artifact("similarity_distribution")
    if dist:
        figs.append(histogram(dist))
    imgs = "".join(f'<img src="{f}" alt="plot">' for f in figs if f)
    warnings = [m["warning"] for m in metrics if "warning" in m]
    warn_html = "".join(f'<li class="warn">{html.escape(w)}</li>' for w in warnings) or "<li>none</li>"
    title = html.escape(info.get("name", run.path.name))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>modalab: {title}</title>
<style>{CSS}</style></head><body>
<h1>modalab run: {title}</h1>
<p>status: <b>{html.escape(str(info.get('status', '?')))}</b> · recipe: {html.escape(str(info.get('recipe', '')))}
 · seed {html.escape(str(info.get('seed', '')))} · commit {html.escape(str(info.get('git_commit', '')))}</p>
<h2>Results (held-out split)</h2>{results_table(results)}
<h2>Plots</h2><div class="figs">{imgs}</div>
<h2>Warnings</h2><ul>{warn_html}</ul>
<h2>Resolved config</h2><pre>{html.escape(config)}</pre>
</body></html>"""


def write_report(run: RunDir) -> Path:
    out = run.path / "report.html"
    atomic_write_text(out, render(run))
    return out

