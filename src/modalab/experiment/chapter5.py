"""Generate ``docs/chapter5.md`` from finished sweeps of ``recipes/chapter5/*.yaml``.

    python -m modalab.experiment.chapter5 runs/chapter5/temperature runs/chapter5/batch_size ... \\
        [--out docs/chapter5.md] [--metric zeroshot_top1]

For each sweep: the claim (read from its recipe's header), our setting (grid, steps, seeds), the
measured metric per arm (mean +/- 95% t-interval half-width over seeds), the verdict and a link to
the sweep's report. The verdict compares the arms the chapter says should win (``CLAIMED`` below)
with the others: *held* when the best claimed arm has the highest mean and every paired difference
to it is significant; *held in direction, not significant* when it has the highest mean only;
*not held here* otherwise. Nothing in the table is typed by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Callable

import yaml

from modalab.constants import TAU_RANGE
from modalab.experiment.chapter5_fragments import Fragment, load_fragments, write_fragment
from modalab.experiment.chapter5_verdicts import as_float as _f
from modalab.experiment.chapter5_verdicts import find_diff as _diff
from modalab.experiment.chapter5_verdicts import flip_verdict, noise_verdict, res_curriculum_verdict
from modalab.experiment.report import write_sweep_report
from modalab.experiment.stats import Comparison, compare, fmt_diff, fmt_p
from modalab.experiment.sweep import base_config_text, header_metric, load_plan
from modalab.train.checkpoint import atomic_write_text


# recipe stem -> which arms (by swept params) the chapter says should win
CLAIMED: dict[str, Callable[[dict[str, str]], bool]] = {
    "temperature": lambda p: TAU_RANGE[0] <= _f(p.get("loss.temperature", "nan")) <= TAU_RANGE[1],
    "batch_size": lambda p: _f(p.get("train.batch_size", "nan")) >= 128,
    "negative_mix": lambda p: _f(p.get("loss.negatives.hard_fraction", "nan")) == 0.2,
    "curriculum": lambda p: "curriculum" in p.get("loss.negatives", ""),
    "flip_ratio": lambda p: _f(p.get("model.vision.patch_dropout", "nan")) == 0.5,
    "freezing": lambda p: p.get("train.stages", "[]") not in ("[]", ""),
    "per_module_lr": lambda p: p.get("optim.param_groups", "[]") not in ("[]", ""),
    "spec_augment": lambda p: p.get("model.spec_augment", "none") != "none",
    "negclip_scenes": lambda p: "text_negatives" in p.get("loss", ""),
    "levels_scenes": lambda p: p.get("loss.schedule", "") == "curriculum",
}


def batch_size_verdict(comp: Comparison, root: Path) -> str:
    """The batch claim twice: the larger batch against a smaller one at equal steps (the claim as the
    chapter states it) and at equal samples seen (the smaller batch for proportionally more steps)."""
    def bs(a):  # type: ignore[no-untyped-def]
        return _f(a.params.get("train.batch_size", "nan")), _f(a.params.get("train.steps", "nan"))
    big = max(comp.arms, key=lambda a: bs(a)[0])
    b0, s0 = bs(big)
    parts = []
    for label, want in (("equal steps", lambda b, s: s == s0), ("equal samples", lambda b, s: b * s == b0 * s0)):
        other = [a for a in comp.arms if bs(a)[0] < b0 and want(*bs(a))]
        if not other:
            continue
        d = _diff(comp, big.arm, other[0].arm)
        if d is None:
            continue
        gain = big.mean - other[0].mean
        if d.significant:
            word = "**held**" if gain > 0 else "**not held here**"
        else:
            word = "**inconclusive**"
        parts.append(f"{label} ({big.arm} vs {other[0].arm}): {word}, {gain * 100:+.1f} points for the larger batch "
                     f"({_pts(d)}){'' if d.significant else ', not significant' + _mde(d)}")
    return "<br>".join(parts) if parts else verdict(comp, CLAIMED["batch_size"])


VERDICTS: dict[str, Callable[[Comparison, Path], str]] = {
    "flip_ratio": flip_verdict, "flip_scenes": flip_verdict, "res_curriculum": res_curriculum_verdict,
    "batch_size": batch_size_verdict, "noisy_pairs": noise_verdict, "noise_scenes": noise_verdict}


def claim_text(recipe: Path) -> str:
    """The ``# Claim ...`` paragraph of a recipe header, as one line: it runs until the next header key
    (a ``# Key`` line not indented, e.g. ``# metric: ...`` or ``# Command: ...``) or the header's end."""
    lines, on = [], False
    for line in recipe.read_text(encoding="utf-8").splitlines():
        if line.startswith("# Claim"):
            on = True
        elif not line.startswith("#") or (line.startswith("# ") and line[2:3].strip()):
            if on:
                break
        if on:
            lines.append(line.lstrip("#").strip())
    return " ".join(lines).removeprefix("Claim").strip(" :")


def verdict(comp: Comparison, claimed: Callable[[dict[str, str]], bool] | None) -> str:
    """*held*: the best claimed arm has the highest mean and every paired difference to the other arms
    is significant (Holm-adjusted paired t and sign-flip); *not held*: another arm beats it
    significantly; else *inconclusive*, with the difference and the MDE the design could detect."""
    if claimed is None:
        return "no verdict rule"
    yes = [a for a in comp.arms if claimed(a.params)]
    no = [a for a in comp.arms if not claimed(a.params)]
    if not yes or not no:
        return "no verdict (the sweep lacks a claimed or a contrasting arm)"
    best = max(yes, key=lambda a: a.mean)
    top_other = max(no, key=lambda a: a.mean)
    if best.mean < top_other.mean:
        d = _diff(comp, best.arm, top_other.arm)
        if d is not None and d.significant:
            return f"**not held here**: {top_other.arm} beats {best.arm} ({_pts(d)}, significant)"
        return (f"**inconclusive**: {top_other.arm} ahead of {best.arm} "
                f"({_pts(d) if d else 'unpaired'}), not significant{_mde(d)}")
    diffs = [_diff(comp, best.arm, o.arm) for o in no]
    if all(d is not None and d.significant for d in diffs):
        return f"**held** ({best.arm} best, every difference significant)"
    weak = [d for d in diffs if d is None or not d.significant]
    n = min((d.n_pairs for d in diffs if d), default=0)
    return (f"**inconclusive**: held in direction ({best.arm} best), not significant at n={n} vs all"
            + "".join(f"; vs {(d.a if d.b == best.arm else d.b)}: {_pts(d)}{_mde(d)}" for d in weak if d))


def _pts(d) -> str:  # type: ignore[no-untyped-def]
    """A paired difference in accuracy points with its Holm-adjusted p-values."""
    return (f"{abs(d.diff) * 100:.1f} points, n={d.n_pairs}, Holm p_t {fmt_p(d.p_t_holm)}, "
            f"p_signflip {fmt_p(d.p_perm_holm)}")


def _mde(d) -> str:  # type: ignore[no-untyped-def]
    return f" (MDE at 80% power {d.mde * 100:.1f} points)" if d is not None and d.mde == d.mde else ""


def setting(root: Path) -> str:
    plan = load_plan(root)
    cfg = yaml.safe_load(base_config_text(plan) or "{}") or {}
    tr = cfg.get("train", {})
    for o in plan.overrides:  # --budget and command-line overrides win over the recipe
        key, _, value = o.partition("=")
        if key.startswith("train."):
            tr[key.removeprefix("train.")] = value
    grid = "; ".join(f"`{k}` in {{{', '.join(v)}}}" for k, v in plan.grid.items())
    return (f"{grid}; {tr.get('steps', '?')} steps, base batch {tr.get('batch_size', '?')}, "
            f"{len(plan.seeds)} seeds")


def protocol(root: Path, comp: Comparison, metric: str) -> tuple[bool, str]:
    """Does the sweep meet the protocol for claims? (baseline converged on val, >= 5 seeds per
    comparison, one commit); the text says why not, and the budget justification."""
    import json

    from modalab.experiment.budget import sweep_budget
    from modalab.experiment.doctor_sweep import MIN_SEEDS
    from modalab.experiment.paired import min_sign_flip_p, seeds_needed

    check = sweep_budget(root, metric)
    n = min((d.n_pairs for d in comp.diffs), default=0)
    from modalab.experiment.code_record import code_conflict, cpu_differs

    commits, runs = set(), []
    for j in load_plan(root).jobs:
        f = j.path / "run.json"
        if f.is_file():
            commits.add(json.loads(f.read_text()).get("git_commit") or "unknown")
            runs.append(j.path)
    # several commits are one computation when every run's code.json agrees (e.g. a baseline reused)
    conflict = code_conflict(runs)
    same_code = len(commits) > 1 and conflict is None
    problems = []
    if not check.converged:
        problems.append(f"baseline {'not converged' if check.converged is False else 'convergence undecided'}")
    if n < MIN_SEEDS:
        problems.append(f"n={n} < {MIN_SEEDS} seeds")
    elif n < (need := seeds_needed(len(comp.diffs), comp.alpha)):
        m = len(comp.diffs)
        problems.append(f"n={n} seeds cannot reach significance: the sign-flip p is at least "
                        f"{m * min_sign_flip_p(n):.3f} after Holm over {m}; needs n >= {need}")
    if len(commits) > 1 and not same_code:
        problems.append(f"{len(commits)} commits")
    if cpu_differs(conflict):
        problems.append(conflict)
    budget = (f"budget: baseline {check.arm} at {check.steps[-1]} steps, val {check.final:.3f} vs plateau "
              f"{check.plateau:.3f}, last-quarter gain {check.final - check.late:+.3f}" if check.steps
              else "budget: no val curve")
    head = "meets the protocol" if not problems else "**does not meet the protocol** (" + "; ".join(problems) + ")"
    return not problems, (f"{head}<br>{budget}<br>n = {n} paired seeds per comparison, {len(comp.diffs)} "
                          f"comparison(s) under Holm<br>commit {', '.join(sorted(c[:10] for c in commits)) or '?'}"
                          + (" (the same code: every run's code.json agrees)" if same_code else ""))


def measured(comp: Comparison, times: Comparison | None = None) -> str:
    secs = {a.arm: a.mean for a in times.arms} if times is not None else {}
    parts = []
    for a in comp.arms:
        half = a.hi - a.mean if a.hi == a.hi else float("nan")
        t = f", train {secs[a.arm]:.0f} s" if a.arm in secs else ""
        parts.append(f"{a.arm}: {a.mean:.3f} ± {half:.3f} (n={a.n}{t})")
    return "<br>".join(parts)


def _times(root: Path) -> Comparison | None:
    try:
        return compare([root], "train_seconds")
    except (KeyError, ValueError, FileNotFoundError):  # runs without train_seconds
        return None


NOT_RERUN = "not rerun under the protocol yet (CPU time: see the section above and docs/benchmarks.md)."


def sweep_fragment(root: Path, out: Path, metric: str, command: str) -> Fragment:
    """The fragment of one finished sweep: its row, budget panel and pairwise bullets; the sweep's report
    is copied beside the document (``<out stem>/<sweep>.html``) so the committed table links to it."""
    from modalab.experiment.chapter5_sections import curve_panel
    from modalab.experiment.rundir import git_commit

    plan = load_plan(root)
    m = header_metric(plan.recipe, metric)
    comp = compare([root], m)
    report = write_sweep_report(root, m)
    kept = out.parent / out.stem / f"{root.name}.html"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(report, kept)
    link = os.path.relpath(kept, out.parent)
    stem = plan.recipe.stem
    ok, proto = protocol(root, comp, m)
    row = (f"| {claim_text(plan.recipe)} | {setting(root)} | `{m}`:<br>{measured(comp, _times(root))} | "
           f"{VERDICTS[stem](comp, root) if stem in VERDICTS else verdict(comp, CLAIMED.get(stem))} "
           f"| {proto} | [{root.name}]({link}) |")
    diffs = "\n".join(f"  - {fmt_diff(d, comp.alpha, comp.power)}" for d in comp.diffs)
    return Fragment(name=root.name, recipe=str(plan.recipe), sweep=str(root), metric=m,
                    generated=dt.date.today().isoformat(), command=command,
                    generator_commit=git_commit(Path.cwd()) or "unknown", meets_protocol=ok, row=row,
                    panel=curve_panel(root, m), details=f"- `{plan.recipe}` ({root}):\n{diffs}")


def generate(sweeps: list[Path], out: Path, metric: str = "zeroshot_top1", keep_old: bool = True,
             reason: str = NOT_RERUN) -> str:
    """Write the fragments of ``sweeps`` (``<out stem>/<sweep>.json``), then assemble ``out`` from every
    fragment there; with ``keep_old``, the rows of an existing ``out``'s old (pre-protocol) section for
    claims with no fragment are kept in that section, marked as not meeting the protocol."""
    from modalab.experiment.chapter5_sections import TABLE_HEAD, kept_old_claims, old_section, short_section

    old_text = out.read_text(encoding="utf-8") if keep_old and out.is_file() else ""
    folder = out.parent / out.stem
    command = "python -m modalab.experiment.chapter5 " + " ".join(str(s) for s in sweeps)
    for root in sweeps:
        write_fragment(folder, sweep_fragment(Path(root), out, metric, command))
    frags = load_fragments(folder)
    old_rows, old_bullets = kept_old_claims(old_text, {f.name for f in frags})
    today = dt.date.today().isoformat()
    text = f"""# Chapter 5 claims, measured here

Assembled on {today} from the per-claim fragments in `{out.stem}/*.json`, each generated by
`python -m modalab.experiment.chapter5 SWEEP_DIR...` from the run directories of its sweep (do not edit
by hand; rerun the sweep and this command: it rewrites that claim's fragment and reassembles the rest as
they are; where and when each row was generated is listed under Provenance). Metric: the claim's own
(named in its row: a recipe's `# metric:` header line, else `{metric}`) on the **test split** of its data
source (for the digits, the held-out 25% of scikit-learn's digits), mean ± 95% t-interval half-width over
seeds; the budget is justified on the **validation split** (10% of train). Differences are paired by seed:
paired t and exact sign-flip permutation p, Holm-adjusted over each sweep's comparisons; "significant"
needs both below 0.05. Interval from the two-level bootstrap (seeds, then test items, paired across
arms); MDE = the smallest difference the paired t-test detects with 80% power at that n and spread (see
`docs/experiments.md`). Verdicts: **held** (the claimed arm best, every difference significant), **not
held here** (another arm significantly better), **inconclusive** (not significant; the MDE says what the
design could have seen). Train seconds were measured on a shared, loaded CPU. This table holds the
sweeps that meet the protocol; the others follow it, as measurements that are not verdicts yet.

{TABLE_HEAD}
{chr(10).join(f.row for f in frags if f.meets_protocol)}

{short_section([f.row for f in frags if not f.meets_protocol])}
## Budget: the validation curves

The budget rule: the baseline arm's mean val curve (of the claim's metric) is within 1 point of its \
plateau at the budget and
rose by at most 1 point over the last quarter of training (`experiment/budget.py`).

{chr(10).join(f.panel for f in frags)}

## Pairwise differences

{chr(10).join(f.details for f in frags)}

Each sweep: `nice -n 10 modalab sweep recipes/chapter5/<name>.yaml --jobs 1 --out runs/chapter5/<name>`
(the grid, seeds and budget are in the recipe's `# sweep:` header line). Reports live in the sweep
directories; copies are in `docs/{out.stem}/`.

## Provenance

{chr(10).join(f.provenance() for f in frags)}

{old_section(old_rows, old_bullets, reason)}"""
    atomic_write_text(out, text.rstrip("\n") + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m modalab.experiment.chapter5", description=__doc__.split("\n")[0])
    p.add_argument("sweeps", nargs="*",
                   help="sweep directories to (re)generate; none: reassemble the document from its fragments")
    p.add_argument("--out", default="docs/chapter5.md")
    p.add_argument("--metric", default="zeroshot_top1")
    p.add_argument("--no-keep-old", action="store_true",
                   help="drop the rows of the existing --out for claims whose sweep is not given")
    p.add_argument("--reason", default=NOT_RERUN, help="why the kept old rows were not regenerated")
    a = p.parse_args(argv)
    generate([Path(s) for s in a.sweeps], Path(a.out), a.metric, not a.no_keep_old, a.reason)
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
