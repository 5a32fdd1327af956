"""A self-contained HTML report of one run: plots embedded as PNG data URIs, no network needed.

Everything is read back from the run directory (config.yaml, metrics.jsonl, results.json,
artifacts/), so ``modalab report RUN_DIR`` can redraw it at any time.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from modalab._optional import lazy
from modalab.experiment.report_panels import fig_to_data_uri
from modalab.experiment.rundir import RunDir
from modalab.train.checkpoint import atomic_write_text

# pyplot on the Agg backend, imported when the first figure is drawn
plt = lazy("matplotlib.pyplot", setup=lambda: __import__("matplotlib").use("Agg"))


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
    ax.set_title("held-out image-text similarity, by label", fontsize=10)
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


def examples(art: dict[str, Any], cols: int = 4) -> str:
    """Example held-out images (base64 PNGs) with their captions, as an HTML grid."""
    cells = "".join(
        f'<figure><img src="data:image/png;base64,{b}" alt="example"><figcaption>{html.escape(c)}</figcaption></figure>'
        for b, c in zip(art["images"], art["captions"]))
    return f'<div class="examples" style="grid-template-columns:repeat({cols},1fr)">{cells}</div>'


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse}td{border:1px solid #ccc;padding:3px 8px;font-size:.9em}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs img{max-width:540px;border:1px solid #eee}
pre{background:#f6f6f6;padding:1em;font-size:.8em;overflow:auto}.warn{color:#a40}
.examples{display:grid;gap:8px;max-width:900px}.examples img{width:128px;image-rendering:pixelated}
.examples figcaption{font-size:.75em}"""


def render(run: RunDir) -> str:
    from modalab.experiment import report_panels as P

    metrics = run.read_metrics()
    results = run.read_results()
    info = run.read_run_info()
    config = (run.path / "config.yaml").read_text() if (run.path / "config.yaml").is_file() else ""
    figs = P.training_panels(metrics)
    heat = run.read_artifact("similarity_heatmap")
    if heat:
        figs.append(heatmap(heat))
    dist = run.read_artifact("similarity_distribution")
    if dist:
        figs.append(histogram(dist))
    imgs = "".join(f'<img src="{f}" alt="plot">' for f in figs if f)
    ex = run.read_artifact("examples")
    ex_html = f"<h2>Held-out examples</h2>{examples(ex)}" if ex else ""
    retrieved = run.read_artifact("retrieval_examples")
    captions = run.read_artifact("captions")
    qualitative = (P.retrieval_examples_html(retrieved) if retrieved
                   else P.captions_html(captions) if captions else "")
    qual_html = f"<h2>Examples (held-out split)</h2>{qualitative}" if qualitative else ""
    warnings = [m["warning"] for m in metrics if "warning" in m]
    skipped = results.get("skipped") if isinstance(results.get("skipped"), list) else []
    if skipped:  # inputs skipped under data.on_error=skip (both splits), the first 20 listed
        warnings.append(f"{len(skipped)} input(s) skipped (data.on_error=skip)")
        warnings += [f"skipped: {s}" for s in skipped[:20]]
        warnings += [f"... and {len(skipped) - 20} more (results.json)"] if len(skipped) > 20 else []
    warn_html = "".join(f'<li class="warn">{html.escape(w)}</li>' for w in warnings) or "<li>none</li>"
    title = html.escape(info.get("name", run.path.name))
    prov = html.escape(provenance_line(info))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>modalab: {title}</title>
<style>{CSS}{P.CSS}</style></head><body>
<h1>modalab run: {title}</h1>
<p>status: <b>{html.escape(str(info.get('status', '?')))}</b> · recipe: {html.escape(str(info.get('recipe', '')))}
 · seed {html.escape(str(info.get('seed', '')))}<br>{prov}</p>
<h2>Results (test split; val_* = validation split, test_* = the plain keys)</h2>{P.results_section(results)}
<h2>Plots</h2><div class="figs">{imgs}</div>{ex_html}
{qual_html}
<h2>Warnings</h2><ul>{warn_html}</ul>
<h2>Resolved config</h2><pre>{html.escape(config)}</pre>
</body></html>"""


def write_report(run: RunDir) -> Path:
    out = run.path / "report.html"
    atomic_write_text(out, render(run))
    return out



# ------------------------------------------------------------------------------ sweep reports


def _short(arm: str, width: int = 28) -> str:
    return arm if len(arm) <= width else arm[: width - 1] + "…"


def metric_vs_param(comp: Any, grid: dict[str, list[str]], key: str) -> str:
    """Mean +/- 95% CI of the metric against the values of one swept key (one series per other
    combo); lines join numeric values only, categorical values are points."""
    from modalab.experiment.sweep_panels import is_categorical

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    values = grid[key]
    style = {"linestyle": "none"} if is_categorical(values) else {}
    series: dict[str, list[tuple[int, float, float]]] = {}
    for a in comp.arms:
        if key not in a.params:
            continue
        rest = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in a.params.items() if k != key) or "all seeds"
        err = 0.0 if a.hi != a.hi else a.hi - a.mean  # NaN with one seed
        series.setdefault(rest, []).append((values.index(a.params[key]), a.mean, err))
    for k, (label, pts) in enumerate(series.items()):
        pts.sort()
        dodge = (k - (len(series) - 1) / 2) * 0.08 if style else 0.0  # categorical points side by side
        ax.errorbar([p[0] + dodge for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=4,
                    label=_short(label, 40), **style)
    ax.set_xticks(range(len(values)), [_short(v, 18) for v in values], fontsize=8)
    ax.set_xlabel(key)
    ax.set_ylabel(comp.metric)
    ax.set_title(f"{comp.metric} vs {key.split('.')[-1]}\n(mean, 95% CI over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7)
    return fig_to_data_uri(fig)


def overlaid_curves(curves: dict[str, list[list[tuple[int, float]]]], key: str,
                    ids: dict[str, str] | None = None) -> str | None:
    """Per arm: the mean over seeds of a logged metric, with a band from min to max over seeds."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    drawn = False
    for arm, runs in curves.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        steps = sorted(set.intersection(*(set(s for s, _ in r) for r in runs)))
        if not steps:
            continue
        ys = np.array([[dict(r)[s] for s in steps] for r in runs])  # (seeds, steps)
        (line,) = ax.plot(steps, ys.mean(0), label=(ids or {}).get(arm, _short(arm)))
        ax.fill_between(steps, ys.min(0), ys.max(0), alpha=0.15, color=line.get_color())
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(f"{key} per arm\n(mean over seeds, band = min..max)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig_to_data_uri(fig)


def similarity_grid(dists: dict[str, dict[str, Any]], ids: dict[str, str] | None = None) -> str | None:
    """One panel per arm: positive vs negative pair similarities on the held-out split."""
    if not dists:
        return None
    n = len(dists)
    cols = min(n, 2)  # the page shows plots ~540 px wide: two panels a row stay legible
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows + 0.4), squeeze=False, sharex=True,
                             layout="constrained")  # titles never overlap the panels above
    for ax, (arm, d) in zip(axes.flat, dists.items()):
        ax.hist(d["negative"], bins=50, alpha=0.6, density=True, label="negative")
        ax.hist(d["positive"], bins=50, alpha=0.6, density=True, label="positive")
        ax.set_title((ids or {}).get(arm, _short(arm, 34)), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("held-out similarity distributions (first seed of each arm)", fontsize=9)
    fig.supxlabel("cosine similarity", fontsize=8)
    return fig_to_data_uri(fig)


def provenance_line(info: dict[str, Any]) -> str:
    """Commit (and whether the tree had uncommitted changes), recipe hash and machine of a run."""
    m = info.get("machine") or {}
    dirty = " +uncommitted changes" if info.get("git_dirty") else ""
    return (f"commit {info.get('git_commit') or 'unknown'}{dirty} · recipe hash {info.get('recipe_hash') or '?'} · "
            f"machine {m.get('host', '?')} ({m.get('platform', '?')}, {m.get('cpus', '?')} CPUs, "
            f"{m.get('threads', '?')} threads, torch {m.get('torch', '?')}, cuda {m.get('cuda', '?')})")


def compare_html(comp: Any, ids: dict[str, str] | None = None) -> str:
    from modalab.experiment.paired import min_sign_flip_p
    from modalab.experiment.stats import fmt_p

    name = (ids or {}).get
    rows = ["<tr><th>arm</th><th>n</th><th>mean</th><th>std</th><th>95% CI</th><th>values by seed</th></tr>"]
    for a in comp.arms:
        vals = ", ".join(f"{s}: {v:.4f}" for s, v in zip(a.seeds, a.values))
        rows.append(f"<tr><td>{html.escape(name(a.arm, a.arm))}</td><td>{a.n}</td><td>{a.mean:.4f}</td>"
                    f"<td>{a.std:.4f}</td><td>[{a.lo:.4f}, {a.hi:.4f}]</td><td>{vals}</td></tr>")
    drows = ["<tr><th>b - a</th><th>pairs</th><th>difference</th><th>95% interval</th>"
             "<th>p paired t (Holm)</th><th>p sign-flip, exact (Holm)</th><th>verdict</th></tr>"]
    for d in comp.diffs:
        verdict = "significant" if d.significant else (
            f"<span class='warn'>not significant at n={d.n_pairs}</span>; MDE (80% power) {d.mde:.4f}; "
            f"smallest possible sign-flip p {fmt_p(min_sign_flip_p(d.n_pairs))}")
        drows.append(f"<tr><td>{html.escape(name(d.b, d.b))} − {html.escape(name(d.a, d.a))}</td>"
                     f"<td>{d.n_pairs}</td><td>{d.diff:+.4f}</td>"
                     f"<td>[{d.lo:+.4f}, {d.hi:+.4f}] {html.escape(d.ci_kind)}</td>"
                     f"<td>{fmt_p(d.p_t)} ({fmt_p(d.p_t_holm)})</td><td>{fmt_p(d.p_perm)} ({fmt_p(d.p_perm_holm)})</td>"
                     f"<td>{verdict}</td></tr>")
    return "<table>" + "".join(rows) + "</table><p></p><table>" + "".join(drows) + "</table>"


def render_sweep(root: Path, metric: str = "zeroshot_top1") -> str:
    """HTML of a sweep directory: metric vs parameters, curves, histograms, compare table, configs."""
    import json

    from modalab.experiment.stats import compare, compare_values, collect
    from modalab.experiment.store import Store, store_path
    from modalab.experiment.sweep import base_config_text, load_plan, run_status
    from modalab.experiment.sweep_grid import key_values
    from modalab.experiment.sweep_panels import CSS as SWEEP_CSS, arm_ids, legend_html

    plan = load_plan(root)
    short = arm_ids(a.name for a in plan.arms)
    comp = compare([root], metric)
    status = [run_status(j.path) for j in plan.jobs]
    budget_html, prov_html = _budget_html(root, metric), _provenance_html(plan)
    swept = key_values(plan.arms)  # a linked axis (batch and steps together) is one plot per key
    figs = [metric_vs_param(comp, swept, k) for k in swept]
    curves: dict[str, dict[str, list]] = {"loss": {}, "tau": {}}
    dists: dict[str, Any] = {}
    with Store(store_path(root)) as st:
        st.index_sweep(root)
        by_arm: dict[str, list[str]] = {}
        for r in st.runs(str(Path(root).resolve())):
            if r["status"] == "finished":
                by_arm.setdefault(r["arm"], []).append(r["run_id"])
        for arm, ids in by_arm.items():
            for key in curves:
                curves[key][arm] = [st.curve(i, key) for i in ids]
            d = RunDir(Path(ids[0])).read_artifact("similarity_distribution")
            if d:
                dists[arm] = d
    figs += [overlaid_curves(curves["loss"], "loss", short), overlaid_curves(curves["tau"], "tau", short)]
    figs.append(similarity_grid(dists, short))
    others = []
    for m in ("image_to_text_R@1", "text_to_image_R@1", "monitor/sim_margin", "monitor/modality_gap", "wall_seconds"):
        if m == metric:
            continue
        try:
            v, p = collect([root], m)
        except FileNotFoundError:
            continue
        c = compare_values(v, m, p, n_boot=1000)
        others.append("<tr><td>" + html.escape(m) + "</td>" + "".join(
            f"<td>{a.mean:.4f} ± {(a.hi - a.mean) if a.hi == a.hi else 0:.4f}</td>" for a in c.arms) + "</tr>")
    head = "<tr><th>metric</th>" + "".join(
        f"<th>{html.escape(short.get(a.arm, a.arm))}</th>" for a in comp.arms) + "</tr>"
    imgs = "".join(f'<img src="{f}" alt="plot">' for f in figs if f)
    config = base_config_text(plan)
    counts = ", ".join(f"{status.count(s)} {s}" for s in ("finished", "failed", "incomplete", "pending")
                       if status.count(s))
    title = html.escape(plan.root.name)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>modalab sweep: {title}</title>
<style>{CSS}{SWEEP_CSS} th{{border:1px solid #ccc;padding:3px 8px;font-size:.85em;background:#f3f3f3}}</style>\
</head><body>
<h1>modalab sweep: {title}</h1>
<p>recipe: {html.escape(str(plan.recipe))} · grid: {html.escape(json.dumps(plan.grid))} · seeds {plan.seeds}
 · runs: {counts} · common overrides: {html.escape(' '.join(plan.overrides) or 'none')}</p>
<h2>Arms</h2>{legend_html(plan.arms, short)}
<h2>Budget: has the baseline arm converged?</h2>{budget_html}
<h2>{html.escape(metric)} per arm (test split)</h2>{compare_html(comp, short)}
<p>Differences are paired by seed. "significant" needs both the paired t-test and the exact sign-flip
permutation test below 0.05 after Holm's correction over the sweep's comparisons (the sign-flip test
cannot go below 2/2^n: 6 seeds at least). The interval is the two-level bootstrap (seeds, then test
items, paired across arms) where runs saved per-item results, else the paired t-interval. MDE: the
smallest true difference the paired t-test would detect with 80% power at this n and spread.</p>
<h2>Other metrics (mean ± 95% CI half-width)</h2><table>{head}{''.join(others)}</table>
<h2>Plots</h2><div class="figs">{imgs}</div>
<h2>Provenance (every run)</h2>{prov_html}
<h2>Resolved config (every arm = this + its overrides + run.seed)</h2><pre>{html.escape(config)}</pre>
</body></html>"""


def _budget_html(root: Path, metric: str) -> str:
    """The plateau check of the baseline arm's val curve, and the pilots of ``--budget converged``."""
    import json

    from modalab.experiment.budget import BUDGET_FILE, sweep_budget

    check = sweep_budget(root, metric)
    cls = "" if check.converged else " class='warn'"
    out = f"<p{cls}>{html.escape(check.line())}</p>"
    if check.steps:
        pts = ", ".join(f"{s}: {v:.4f}" for s, v in zip(check.steps, check.curve))
        out += f"<p>mean val curve of the baseline (step: value): {pts}</p>"
    f = Path(root) / BUDGET_FILE
    if f.is_file():
        rec = json.loads(f.read_text())
        rows = "".join(f"<li>{p['steps']} steps: {'converged' if p['converged'] else 'not converged'} "
                       f"(final {p['final']:.4f}, plateau {p['plateau']:.4f})</li>" for p in rec.get("pilots", []))
        out += f"<p>--budget converged chose {rec['steps']} steps ({html.escape(rec['rule'])}):</p><ul>{rows}</ul>"
    return out


def _provenance_html(plan: Any) -> str:
    """The commits, machines and recipe of the sweep's runs, with how many runs had each."""
    import json
    from collections import Counter

    from modalab.experiment.rundir import text_hash

    from modalab.experiment.code_record import code_conflict, cpu_differs
    from modalab.experiment.reuse import REUSED_FILE

    commits: Counter = Counter()
    machines: Counter = Counter()
    hashes, runs, reused = set(), [], Counter()
    for j in plan.jobs:
        f = j.path / "run.json"
        if f.is_file():
            runs.append(j.path)
            if (j.path / REUSED_FILE).is_file():
                reused[str(Path(json.loads((j.path / REUSED_FILE).read_text()).get("reused_from", "?"))
                           .parent.parent)] += 1
            info = json.loads(f.read_text())
            m = info.get("machine") or {}
            dirty = " +uncommitted changes" if info.get("git_dirty") else ""
            commits[f"{info.get('git_commit') or 'unknown'}{dirty}"] += 1
            machines[f"{m.get('host', '?')} ({m.get('platform', '?')}, {m.get('cpus', '?')} CPUs, "
                     f"{m.get('threads', '?')} threads, torch {m.get('torch', '?')})"] += 1
            hashes.add(info.get("recipe_hash"))
    snap = text_hash(plan.snapshot.read_text()) if plan.snapshot.is_file() else "?"
    li = lambda c: "".join(f"<li>{n} run(s): {html.escape(k)}</li>" for k, n in c.most_common())  # noqa: E731
    conflict = code_conflict(runs) if runs else "no run yet"
    if conflict:
        conflict = conflict.replace(f"{plan.root}/", "")  # run folders relative to the sweep
    code = ("<p>code: every run's code.json agrees (the modalab modules each run loaded, the numeric packages "
            "and the CPU)</p>" if conflict is None else f"<p>code: {html.escape(conflict)}</p>")
    copied = (f"<p>copied by <code>sweep --reuse</code> (reused.json), not trained here:</p><ul>{li(reused)}</ul>"
              if reused else "")
    other_machine = len(machines) > 1 or cpu_differs(conflict)
    warn = ("<p class='warn'>runs differ in commit or machine</p>"
            if (len(commits) > 1 and conflict is not None) or other_machine else "")
    return (f"{warn}<p>sweep recipe snapshot hash {snap}; {len(hashes)} distinct resolved-recipe hashes "
            f"(one per arm x seed: run.json's recipe_hash covers the overrides and the seed)</p>"
            f"<p>commits:</p><ul>{li(commits) or '<li>no run yet</li>'}</ul><p>machines:</p><ul>{li(machines)}</ul>"
            f"<div style='overflow-wrap:anywhere'>{code}{copied}</div>")  # long paths wrap, not widen the page


def write_sweep_report(root: Path, metric: str = "zeroshot_top1") -> Path:
    out = Path(root) / "report.html"
    atomic_write_text(out, render_sweep(Path(root), metric))
    return out
