"""``modalab doctor SWEEP_DIR``: is this sweep fit to support a claim?

Checks, each a :class:`Finding` as for runs:

- ``budget``: the baseline arm's validation curve must be within 1 point of its own plateau at the
  budget (``experiment/budget.py``); not converged is an error, undecided (too few val points) a
  warning.
- ``seeds``: every comparison needs >= 5 paired seeds (an error below); where the exact sign-flip
  test cannot reach p < 0.05 after Holm over the sweep's m comparisons (its smallest p is 2/2^n, so
  m * 2/2^n must be below 0.05: 6 seeds for one comparison, 7 for three), that is worth knowing (info).
- ``provenance``: runs made from different commits or machines (a warning), or from a tree with
  uncommitted changes (info).
"""

from __future__ import annotations

import json
from pathlib import Path

from modalab.experiment.doctor_view import SEVERITY_ORDER, Finding

MIN_SEEDS = 5


def check_budget(root: Path, metric: str) -> list[Finding]:
    from modalab.experiment.budget import sweep_budget

    c = sweep_budget(root, metric)
    if c.converged:
        return []
    sev = "error" if c.converged is False else "warning"
    return [Finding("budget", sev,
                    f"the baseline arm {c.arm} has {'not converged' if c.converged is False else 'no usable val curve'}"
                    f": arms compared here measure speed of learning, not where they end", c.line(),
                    "rerun with `modalab sweep ... --budget converged` (or a larger --budget N with "
                    "train.eval_every set), then compare again")]


def check_seeds(root: Path, metric: str) -> list[Finding]:
    from modalab.experiment.paired import min_sign_flip_p, seeds_needed
    from modalab.experiment.stats import compare

    comp = compare([root], metric, n_boot=200)
    small = [d for d in comp.diffs if d.n_pairs < MIN_SEEDS]
    out = []
    if small:
        ev = "; ".join(f"{d.b} - {d.a}: n={d.n_pairs}" for d in small[:6]) + (" ..." if len(small) > 6 else "")
        out.append(Finding("seeds", "error", f"{len(small)} of {len(comp.diffs)} comparison(s) have fewer than "
                           f"{MIN_SEEDS} paired seeds", ev,
                           f"add seeds: `modalab sweep ... --seeds {MIN_SEEDS + 1}` with the same --out resumes "
                           f"and extends the sweep"))
    # Holm multiplies the smallest raw p by the number of comparisons m: the exact sign-flip test
    # (smallest raw p 2/2^n) can only be significant when m * 2/2^n < alpha
    m = len(comp.diffs)
    capped = [d for d in comp.diffs if d.n_pairs >= MIN_SEEDS and m * min_sign_flip_p(d.n_pairs) >= comp.alpha]
    if capped:
        n = min(d.n_pairs for d in capped)
        floor = min(1.0, m * min_sign_flip_p(n))
        need = seeds_needed(m, comp.alpha)
        holm_txt = f" after Holm over {m} comparisons" if m > 1 else ""
        out.append(Finding("seeds", "info", f"{len(capped)} comparison(s) at n={n}: the exact sign-flip test "
                           f"cannot go below p = {floor:.4f}{holm_txt}, so none can be significant",
                           ", ".join(f"{d.b} - {d.a}" for d in capped[:6]),
                           f"use >= {need} seeds for {m} comparison(s)"))
    return out


def check_provenance(root: Path) -> list[Finding]:
    from modalab.experiment.sweep import load_plan

    from modalab.experiment.code_record import code_conflict, cpu_differs

    commits, machines, dirty, runs = set(), set(), 0, []
    for j in load_plan(root).jobs:
        f = j.path / "run.json"
        if not f.is_file():
            continue
        runs.append(j.path)
        info = json.loads(f.read_text())
        commits.add(info.get("git_commit"))
        m = info.get("machine") or {}
        machines.add((m.get("host"), m.get("platform"), m.get("threads")))
        dirty += bool(info.get("git_dirty"))
    out = []
    conflict = code_conflict(runs)
    if cpu_differs(conflict):
        machines.add(conflict)
    if len(commits) > 1 and len(machines) == 1 and conflict is None:
        out.append(Finding("provenance", "info", "the sweep's runs come from different commits with the same code",
                           f"commits {sorted(map(str, commits))}; every run's code.json agrees",
                           "nothing to do: the modules they ran and the package versions are identical"))
    elif len(commits) > 1 or len(machines) > 1:
        out.append(Finding("provenance", "warning", "the sweep's runs come from different commits or machines",
                           f"commits {sorted(map(str, commits))}; machines {sorted(map(str, machines))}",
                           "rerun the sweep from one commit on one machine"))
    if dirty:
        out.append(Finding("provenance", "info", f"{dirty} run(s) were made with uncommitted changes",
                           "run.json git_dirty", "commit before running sweeps that back a claim"))
    return out


def diagnose_sweep(root: Path, metric: str = "zeroshot_top1") -> list[Finding]:
    out: list[Finding] = []
    for name, fn in (("budget", lambda: check_budget(root, metric)), ("seeds", lambda: check_seeds(root, metric)),
                     ("provenance", lambda: check_provenance(root))):
        try:
            out.extend(fn())
        except Exception as e:  # a check must not hide the others
            out.append(Finding(name, "info", f"check '{name}' could not run", f"{type(e).__name__}: {e}", "-"))
    return sorted(out, key=lambda f: SEVERITY_ORDER[f.severity])
