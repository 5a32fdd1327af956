"""Parts of ``docs/chapter5.md`` beside the claims table (``experiment/chapter5.py``).

- :func:`curve_panel`: the budget justification of one sweep as text: the mean validation curve of
  every arm over its seeds (step by step, the baseline arm marked), then the plateau rule's verdict
  on the baseline (``experiment/budget.py``) and the pilots of ``--budget converged`` if any.
- :func:`kept_old_claims`: the rows (and pairwise bullets) of an earlier ``docs/chapter5.md`` for
  claims whose sweep is not regenerated now, so that a partial regeneration keeps them, marked as not
  meeting the protocol. Rows are matched by their report link ``(chapter5/<sweep>.html)``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

OLD_HEADING = "## Not regenerated under the protocol"
# sections of an earlier document whose rows did not meet the protocol
_OLD_SECTIONS = ("## The old table", OLD_HEADING)
_LINK = re.compile(r"\]\(chapter5/([A-Za-z0-9_.-]+)\.html\)")
_BULLET = re.compile(r"^- `recipes/chapter5/([A-Za-z0-9_.-]+)\.yaml`")


def curve_panel(root: Path, metric: str = "zeroshot_top1") -> str:
    """Markdown: the per-arm mean val curves of a sweep, the baseline's plateau check, the pilots."""
    from modalab.experiment.budget import BUDGET_FILE, baseline_arm, run_curve, sweep_budget
    from modalab.experiment.sweep import load_plan, run_status

    plan = load_plan(root)
    base = baseline_arm(plan)
    check = sweep_budget(root, metric)
    by_arm: dict[str, list[dict[int, float]]] = {}
    for j in plan.jobs:
        if run_status(j.path) == "finished":
            c = run_curve(j.path, metric)
            if c:
                by_arm.setdefault(j.arm.name, []).append(dict(c))
    lines = [f"- `{plan.recipe}` ({root}): {check.line()}"]
    if by_arm:
        arms = [a.name for a in plan.arms if a.name in by_arm]
        steps = sorted(set.intersection(*(set(r) for runs in by_arm.values() for r in runs)))
        head = " | ".join(f"{a} (baseline)" if a == base.name else a for a in arms)
        lines += ["", f"  | step | {head} |", "  |---|" + "---|" * len(arms)]
        for s in steps:
            cells = " | ".join(f"{sum(r[s] for r in by_arm[a]) / len(by_arm[a]):.3f}" for a in arms)
            lines.append(f"  | {s} | {cells} |")
        n = ", ".join(f"{a}: {len(by_arm[a])}" for a in arms)
        lines += ["", f"  (mean val_{metric} over finished runs; runs per arm: {n})"]
    f = Path(root) / BUDGET_FILE
    if f.is_file():
        rec = json.loads(f.read_text(encoding="utf-8"))
        pilots = "; ".join(f"{p['steps']} steps: {'converged' if p['converged'] else 'not converged'} "
                           f"(final {p['final']:.3f}, plateau {p['plateau']:.3f})" for p in rec.get("pilots", []))
        lines.append(f"  `--budget converged` pilots of the baseline: {pilots}; chose {rec['steps']} steps")
    return "\n".join(lines)


def kept_old_claims(old_text: str, regenerated: set[str]) -> tuple[list[str], list[str]]:
    """``(rows, bullets)`` of ``old_text``'s non-protocol claims whose sweep is not in ``regenerated``.

    Rows come from the sections named in ``_OLD_SECTIONS`` (the old table); the pairwise bullets (a
    ``- `recipes/chapter5/<name>.yaml``` line and its indented lines) from anywhere, first block per
    name. Raises ``ValueError`` when ``old_text`` has a protocol-era row (outside those sections) for
    a sweep not regenerated now: dropping it silently would lose a regenerated claim.
    """
    rows: list[str] = []
    section = ""
    for line in old_text.splitlines():
        if line.startswith("## "):
            section = line
            continue
        m = _LINK.search(line)
        if not (line.startswith("| ") and m):
            continue
        name = m.group(1)
        if name in regenerated:
            continue
        if not section.startswith(_OLD_SECTIONS):
            raise ValueError(f"the existing document has a regenerated row for the sweep '{name}' "
                             f"(section {section!r}); pass its sweep directory too, or it would be dropped")
        rows.append(line)
    kept = {_LINK.search(r).group(1) for r in rows}  # type: ignore[union-attr]
    bullets: list[str] = []
    seen: set[str] = set()
    block: list[str] | None = None
    for line in old_text.splitlines():
        m = _BULLET.match(line)
        if m:
            block = [line] if m.group(1) in kept and m.group(1) not in seen else None
            if block is not None:
                seen.add(m.group(1))
                bullets.append(line)
            continue
        if block is not None and line.startswith("  - "):
            bullets.append(line)
        else:
            block = None
    return rows, bullets


def old_section(rows: list[str], bullets: list[str], reason: str) -> str:
    """The document section that carries the kept rows, with the reason they were not rerun."""
    if not rows:
        return ""
    return f"""{OLD_HEADING} (old 3-seed table of 2026-11-29; these rows do not meet it)

These claims were **not regenerated**: {reason} Their numbers come from 3 seeds at 100-300 steps,
where the baseline is far from its plateau, on the test split, with a seed-only bootstrap: read every
"not held here" below as "undertrained and under-powered", not as a finding.

| claim (chapter 5) | our setting | measured zeroshot_top1 | held here? | report |
|---|---|---|---|---|
{chr(10).join(rows)}

Old pairwise differences (paired t p, not Holm-adjusted; bootstrap over seeds only):

{chr(10).join(bullets)}
"""


TABLE_HEAD = ("| claim (chapter 5) | our setting | measured (test) | held here? | protocol | report |\n"
              "|---|---|---|---|---|---|")


SHORT_HEAD = TABLE_HEAD.replace("| held here? |", "| what the runs showed (not a verdict) |")
_VERDICT_WORDS = (("**held**", "reads as held"), ("**not held here**", "reads as not held"),
                  ("**inconclusive**", "inconclusive"))


def as_description(row: str) -> str:
    """``row`` with its verdict words unbolded and marked as a description at that budget."""
    for word, plain in _VERDICT_WORDS:
        row = row.replace(word, f"description, {plain} at this budget")
    return row


def short_section(rows: list[str]) -> str:
    """The rows whose sweep fails the protocol, in a table of their own: measured, but not verdicts."""
    if not rows:
        return ""
    return f"""## Not verdicts yet: sweeps short of the protocol

Measured and reported the same way as the table above, but each fails the protocol for the reason in
its protocol column (a baseline not converged at the budget, or too few seeds): its fourth column says
what the runs showed at that budget, a description, not a verdict on the claim.

{SHORT_HEAD}
{chr(10).join(as_description(r) for r in rows)}
"""
