"""``modalab doctor RUN_DIR``: automatic checks for the chapter's classic pitfalls.

Each check reads the run directory (run.json, config.yaml, metrics.jsonl, results.json,
checkpoints/) and returns findings with a severity (``error`` | ``warning`` | ``info``), the
evidence (numbers, steps) and a suggested fix. ``modalab doctor`` exits non-zero when any finding
is an error, so it can gate CI. A healthy run has no errors and no warnings; ``info`` notes are
facts worth knowing (e.g. the expected false-negative rate of class-level captions).

Checks: temperature (tau outside [0.01, 0.1], logit scale at its clamp); loss spikes and
non-finite steps; embedding collapse (effective rank, per-dimension std) and a widening modality
gap; false negatives in batches (same label / identical captions, unmasked); train/test leakage
(identical content hashes across splits); a batch smaller than the number of classes; frozen
modules that changed and trainable modules that never changed (reconstructed initial weights vs
checkpoints); realised data-mix proportions off their target (``doctor_mix.py``); evaluation that
reports only the loss; a stale ``running`` status (its process is gone), an interrupted run and
skipped inputs (``doctor_status.py``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import tempfile
from pathlib import Path
from statistics import median
from typing import Any, Callable

from modalab.constants import TAU_RANGE
from modalab.experiment.doctor_mix import check_mix
from modalab.experiment.doctor_status import check_status
from modalab.experiment.doctor_view import SEVERITY_ORDER, Finding, RunView
from modalab.experiment.rundir import RunDir



# ------------------------------------------------------------------------------------ checks


def check_temperature(v: RunView) -> list[Finding]:
    out = []
    fixed = v.cfg("loss.temperature")
    taus = [(m["step"], m["tau"]) for m in v.train if isinstance(m.get("tau"), (int, float))]
    tau = fixed if fixed is not None else (taus[-1][1] if taus else v.results.get("tau_final"))
    if isinstance(tau, (int, float)) and not TAU_RANGE[0] <= tau <= TAU_RANGE[1]:
        far = tau < TAU_RANGE[0] / 3 or tau > TAU_RANGE[1] * 5
        src = "loss.temperature (fixed)" if fixed is not None else f"learned, at step {taus[-1][0] if taus else '?'}"
        out.append(Finding(
            "temperature", "error" if far else "warning",
            f"tau = {tau:.4g} is outside the chapter's range [{TAU_RANGE[0]}, {TAU_RANGE[1]}]",
            f"tau {tau:.4g} ({src}); logit scale {1 / tau:.1f}",
            "set loss.temperature within [0.01, 0.1] (or learn it from model.init_logit_scale = 1/0.07)",
        ))
    max_scale = v.cfg("model.max_logit_scale")
    scales = [(m["step"], m["logit_scale"]) for m in v.train if isinstance(m.get("logit_scale"), (int, float))]
    if fixed is None and max_scale and scales:
        at = [s for s, x in scales if x >= max_scale * 0.999]
        if len(at) >= max(2, len(scales) // 4):
            out.append(Finding(
                "logit_scale_clamp", "warning",
                f"the learned logit scale sits at its clamp ({max_scale}) for {len(at)}/{len(scales)} logged steps",
                f"first at step {at[0]}, last at step {at[-1]}",
                "the temperature wants to go lower than allowed: check for duplicate / false-negative pairs, "
                "lower the learning rate of logit_scale, or fix tau (loss.temperature)",
            ))
    return out


def check_loss(v: RunView) -> list[Finding]:
    out = []
    bad = [m["step"] for m in v.metrics if m.get("event") == "non_finite"]
    steps = v.cfg("train.steps", 1) or 1
    if bad:
        sev = "error" if len(bad) > max(1, steps // 100) else "warning"
        out.append(Finding(
            "non_finite", sev, f"{len(bad)} step(s) had a non-finite loss or gradient and were skipped",
            f"steps {bad[:10]}{' ...' if len(bad) > 10 else ''} of {steps}",
            "lower optim.lr, raise tau, use train.precision=fp32/bf16, keep train.grad_clip",
        ))
    losses = [(m["step"], m["loss"]) for m in v.train if isinstance(m.get("loss"), (int, float))]
    spikes = []
    for i in range(5, len(losses)):
        ref = median(x for _, x in losses[i - 5:i])
        if ref > 0 and losses[i][1] > 1.5 * ref + 0.1:
            spikes.append((losses[i][0], losses[i][1], ref))
    if spikes:
        s, x, ref = spikes[0]
        out.append(Finding(
            "loss_spikes", "warning",
            f"{len(spikes)} loss spike(s): the logged loss jumped above 1.5x its recent median",
            f"first at step {s}: {x:.3f} vs median {ref:.3f}; steps {[p[0] for p in spikes[:10]]}",
            "lower optim.lr or add warm-up (optim.warmup_steps), keep train.grad_clip, check for bad batches",
        ))
    return out


def check_geometry(v: RunView) -> list[Finding]:
    out = []
    r = v.results
    for side in ("image", "text"):
        frac, std = r.get(f"monitor/erank_{side}_frac"), r.get(f"monitor/std_{side}_mean")
        if not isinstance(frac, (int, float)):
            continue
        if frac < 0.05 or (isinstance(std, (int, float)) and std < 1e-4):
            out.append(Finding(
                "collapse", "error", f"{side} embeddings collapsed",
                f"effective rank {r.get(f'monitor/erank_{side}', float('nan')):.2f} "
                f"({frac:.3f} of the dimension), mean per-dimension std {std if std is not None else float('nan'):.2e}",
                "check that the loss has negatives (batch > 1, not all masked), lower optim.lr, "
                "raise tau; look at the similarity histograms in report.html",
            ))
    gaps = [(m["step"], m["val_monitor/modality_gap"]) for m in v.metrics
            if isinstance(m.get("val_monitor/modality_gap"), (int, float))]
    final_gap = r.get("monitor/modality_gap")
    if gaps and isinstance(final_gap, (int, float)):
        first = max(gaps[0][1], 0.1)
        if final_gap > 1.5 * first:
            out.append(Finding(
                "modality_gap", "warning", "the modality gap widened during training",
                f"gap {gaps[0][1]:.3f} at step {gaps[0][0]} -> {final_gap:.3f} at the end",
                "a widening gap with a falling loss often means the temperature is too low; "
                "try a higher tau or a lower logit-scale learning rate",
            ))
    return out


def _num_classes(v: RunView) -> int | None:
    art = RunDir(v.path).read_artifact("similarity_heatmap")
    names = (art or {}).get("classnames")
    return len(names) if names else None


def check_batch(v: RunView) -> list[Finding]:
    out = []
    c, b = _num_classes(v), v.cfg("train.batch_size")
    if not c or not b:
        return out
    if b < c:
        out.append(Finding(
            "batch_vs_classes", "error" if b < c / 2 else "warning",
            f"the contrastive batch ({b}) is smaller than the number of classes ({c})",
            f"train.batch_size={b}, {c} classes: most classes never meet as negatives in a step",
            "raise train.batch_size (or accumulate exactly: train.accum_steps with accum_mode=exact)",
        ))
    masked = bool(v.cfg("loss.mask_same_label")) or v.cfg("loss.name") in ("soft_label_info_nce",)
    if not masked and c:
        rate = 1.0 / c  # share of in-batch negatives with the query's own label (balanced classes)
        sev = "warning" if rate > 0.2 else "info"
        out.append(Finding(
            "false_negatives", sev,
            f"about {rate:.0%} of in-batch negatives share the positive's label (false negatives)",
            f"{c} classes, batch {b}: ~{(b - 1) * rate:.1f} same-label items per row, not masked",
            "mask same-label pairs (loss.mask_same_label, sampled/hard-negative losses) or use soft labels",
        ))
    return out


def _content_hashes(dataset: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i in range(len(dataset)):
        s = dataset[i]
        if s.media is None:
            continue
        h = hashlib.sha1(s.media.detach().float().cpu().numpy().tobytes()).hexdigest()
        out.setdefault(h, []).append(str(s.id))
    return out


def check_leakage(v: RunView) -> list[Finding]:
    from modalab import registry

    recipe = v.recipe()
    data = recipe.data
    if "augment" in type(data).model_fields:
        data = data.model_copy(update={"augment": False})  # hash the content, not a random view
    splits = registry.build("source", data.source, data, seed=recipe.data_seed)
    train, test = _content_hashes(splits.train), _content_hashes(splits.test)
    shared = [h for h in test if h in train]
    if not shared:
        return []
    n_test = sum(len(x) for x in test.values())
    leaked = sum(len(test[h]) for h in shared)
    examples = "; ".join(f"test {test[h][0]} = train {train[h][0]}" for h in shared[:3])
    return [Finding(
        "leakage", "error" if leaked / max(n_test, 1) > 0.01 else "warning",
        f"{leaked} of {n_test} test items have the same content as a training item",
        examples, "deduplicate by content hash before splitting; split by source (e.g. by writer / video)",
    )]


def _frozen_patterns(v: RunView) -> tuple[list[str], list[tuple[int, int, list[str]]]]:
    """Patterns with lr 0, and stage intervals (start, end, trainable patterns)."""
    zero = [g["pattern"] for g in v.cfg("optim.param_groups", []) or [] if g.get("lr") == 0]
    stages, start = [], 0
    for s in v.cfg("train.stages", []) or []:
        stages.append((start, start + s["steps"], list(s.get("trainable", ["*"]))))
        zero_s = [p for p, lr in (s.get("lr") or {}).items() if lr == 0]
        stages[-1][2][:] = [p for p in stages[-1][2] if p not in zero_s]
        start += s["steps"]
    return zero, stages


def initial_weights(v: RunView) -> dict[str, Any]:
    """The model's weights at step 0, rebuilt with the run's seed exactly as the runner does."""
    from modalab import registry
    from modalab.experiment.rundir import ReadOnlyRunDir
    from modalab.train.seeding import seed_everything

    recipe = v.recipe()
    seed_everything(recipe.run.seed)
    with tempfile.TemporaryDirectory() as tmp:
        task = registry.build("task", recipe.task, recipe, ReadOnlyRunDir(Path(tmp)))
    return {k: t.detach().clone() for k, t in task.model.state_dict().items()}


def _checkpoints(v: RunView) -> dict[int, Path]:
    out = {}
    for d in (v.path / "checkpoints").glob("step_*"):
        if (d / "model.safetensors").is_file():
            out[int(d.name.split("_")[1])] = d / "model.safetensors"
    return out


def _module(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def check_frozen(v: RunView, init: Callable[[RunView], dict[str, Any]] = initial_weights) -> list[Finding]:
    from safetensors.torch import load_file

    ckpts = _checkpoints(v)
    if not ckpts or v.info.get("status") != "finished":
        return []
    w0 = init(v)
    zero, stages = _frozen_patterns(v)
    weights = {0: w0, **{s: None for s in ckpts}}

    def at(step: int) -> dict[str, Any]:
        if weights.get(step) is None:
            weights[step] = load_file(str(ckpts[step]))
        return weights[step]

    out: list[Finding] = []
    changed_bad: dict[str, str] = {}
    # lr 0 for the whole run: no change from init to the last checkpoint
    last = max(ckpts)
    intervals = [(0, last, zero, "optim.param_groups lr 0")] if zero else []
    for a, b, trainable in stages:  # frozen in a stage: no change across it, when both ends exist
        frozen = None if trainable == ["*"] else trainable
        if frozen is not None and (a == 0 or a in ckpts) and b in ckpts:
            intervals.append((a, b, trainable, f"stage steps {a}-{b}"))
    for a, b, pats, why in intervals:
        wa, wb = at(a), at(b)
        for name, t0 in wa.items():
            if name not in wb:
                continue
            is_frozen = any(fnmatch.fnmatchcase(name, p) for p in pats) if "lr 0" in why else not any(
                fnmatch.fnmatchcase(name, p) for p in pats)
            if is_frozen and not t0.float().equal(wb[name].float()):
                diff = (wb[name].float() - t0.float()).norm() / (t0.float().norm() + 1e-12)
                changed_bad.setdefault(_module(name), f"{name}: relative change {diff:.2e} ({why})")
    if changed_bad:
        out.append(Finding(
            "frozen_changed", "error", f"{len(changed_bad)} module(s) meant to be frozen changed",
            "; ".join(list(changed_bad.values())[:4]),
            "freeze with requires_grad=False (train.stages trainable patterns) rather than lr 0 with weight "
            "decay or momentum; check that the patterns match the parameter names",
        ))
    # trainable somewhere with lr > 0 but never changed
    frozen_all = set()
    for name in w0:
        if any(fnmatch.fnmatchcase(name, p) for p in zero):
            frozen_all.add(name)
        elif stages and not any(any(fnmatch.fnmatchcase(name, p) for p in tr) for _, _, tr in stages):
            frozen_all.add(name)
    fixed_tau = v.cfg("loss.temperature") is not None
    still = {}
    wl = at(last)
    for name, t0 in w0.items():
        if name in frozen_all or name not in wl or (fixed_tau and "logit_scale" in name):
            continue
        if "logit_bias" in name and v.cfg("loss.name") != "siglip":
            continue
        if t0.float().equal(wl[name].float()):
            still.setdefault(_module(name), name)
    if still:
        out.append(Finding(
            "not_training", "warning", f"{len(still)} module(s) meant to train never changed",
            f"unchanged from step 0 to {last}: {', '.join(list(still.values())[:6])}",
            "check requires_grad, that the module is used in the loss, and its learning rate",
        ))
    return out


EVAL_KEYS = ("zeroshot", "R@", "accuracy", "top1", "mAP", "map", "psnr", "wer", "f1")


def check_eval(v: RunView) -> list[Finding]:
    keys = [k for k, x in v.results.items() if isinstance(x, (int, float))]
    if v.results and not any(any(e in k for e in EVAL_KEYS) for k in keys):
        return [Finding(
            "eval_only_loss", "warning", "the evaluation reports no task metric (only the loss / counts)",
            f"results.json keys: {', '.join(keys[:12])}",
            "report retrieval (R@K) and zero-shot accuracy and watch similarity distributions, not just the loss",
        )]
    return []


CHECKS: dict[str, Callable[[RunView], list[Finding]]] = {
    "status": check_status,
    "temperature": check_temperature,
    "loss": check_loss,
    "geometry": check_geometry,
    "batch": check_batch,
    "leakage": check_leakage,
    "frozen": check_frozen,
    "eval": check_eval,
    "data_mix": check_mix,
}


def diagnose(path: Path, checks: dict[str, Callable[[RunView], list[Finding]]] | None = None) -> list[Finding]:
    """Run every check on the run directory ``path``; a check that cannot run is an info finding."""
    v = RunView(Path(path))
    out: list[Finding] = []
    for name, fn in (checks or CHECKS).items():
        try:
            out.extend(fn(v))
        except Exception as e:  # a check must not hide the others
            out.append(Finding(name, "info", f"check '{name}' could not run", f"{type(e).__name__}: {e}", "-"))
    return sorted(out, key=lambda f: SEVERITY_ORDER[f.severity])


def format_findings(findings: list[Finding], path: Path) -> str:
    if not findings:
        return f"doctor {path}: no findings"
    lines = [f"doctor {path}: " + ", ".join(
        f"{sum(f.severity == s for f in findings)} {s}" for s in SEVERITY_ORDER)]
    for f in findings:
        lines += [f"[{f.severity.upper()}] {f.check}: {f.message}", f"    evidence: {f.evidence}", f"    fix: {f.fix}"]
    return "\n".join(lines)
