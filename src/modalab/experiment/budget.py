"""Is a sweep's training budget long enough to compare arms? The baseline arm's validation curve.

Arms compared before the baseline has converged measure how fast each arm starts, not where it
ends. The rule: the baseline arm's mean validation curve (over seeds) must be within ``tol`` (one
point of accuracy) of its own plateau at the budget, and flat over the last quarter of training:

- ``plateau = max(curve)``; ``final = curve[-1]``; ``late = curve`` at the last evaluation at or
  before 75% of the budget;
- converged when ``plateau - final <= tol`` and ``final - late <= tol``;
- undecided (None) with fewer than 3 validation points (set ``train.eval_every``).

``gain_se`` (shown, not part of the rule): the standard error over runs of each run's own
last-quarter gain. A gain within about two of them of zero is one the seeds cannot tell from noise;
more seeds or a larger validation set make the rule decidable.

For a metric where lower is better (FID, KID, a loss, an error rate: :func:`lower_is_better`) the
rule runs on the negated curve, so the plateau is the curve's minimum. For a metric outside [0, 1]
(FID, PSNR in dB) ``tol`` is relative: 1% of the plateau's magnitude.

:func:`find_budget` is ``modalab sweep --budget converged``: a pilot run of the baseline arm (first
seed) at the recipe's step count, doubled until the rule holds (at most ``max_doublings`` times).
The baseline arm is the arm whose swept values equal the recipe's own (else the first arm).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

TOL = 0.01
TAIL = 0.25
BUDGET_FILE = "budget.json"


@dataclass
class BudgetCheck:
    arm: str
    metric: str  # the validation key read, e.g. val_zeroshot_top1
    n_runs: int
    steps: list[int]
    curve: list[float]  # mean over runs at each step
    plateau: float
    final: float
    late: float
    converged: bool | None
    reason: str
    gain_se: float = float("nan")  # standard error over runs of the last-quarter gain (>= 2 runs)
    tol: float = TOL  # the tolerance applied, in the metric's units (relative for FID, dB: see above)

    def line(self) -> str:
        verdict = {True: "converged", False: "NOT converged", None: "undecided"}[self.converged]
        if not self.steps:
            return f"budget check ({self.arm}, {self.metric}): {verdict}: {self.reason}"
        se = f" ± {self.gain_se:.4f} (SE over runs)" if self.gain_se == self.gain_se else ""
        return (f"budget check (baseline arm {self.arm}, {self.metric}, mean of {self.n_runs} run(s)): "
                f"{verdict} at {self.steps[-1]} steps: final {self.final:.4f}, plateau {self.plateau:.4f}, "
                f"gain over the last {TAIL:.0%} {self.final - self.late:+.4f}{se} (tolerance {self.tol:.4g}); "
                f"{self.reason}")


_LOWER = re.compile(r"(^|[^a-z])(fid|kid|loss|lpips\w*|mse|mae|error|err|wer|cer|distance|dist|perplexity|ppl)"
                    r"($|[^a-z])")


def lower_is_better(metric: str) -> bool:
    """Does a smaller value of ``metric`` (e.g. ``val_fid``, ``val_loss``, ``wer``) mean better?"""
    return bool(_LOWER.search(metric.lower().removeprefix("val_")))


def plateau_check(curves: Sequence[Sequence[tuple[int, float]]], arm: str = "", metric: str = "",
                  tol: float = TOL) -> BudgetCheck:
    """The rule above on the mean of ``curves`` (``[(step, value), ...]`` per run) at shared steps."""
    shared = sorted(set.intersection(*(set(s for s, _ in c) for c in curves))) if curves else []
    if len(shared) < 3:
        return BudgetCheck(arm, metric, len(curves), shared, [], float("nan"), float("nan"), float("nan"),
                           None, f"{len(shared)} validation point(s) shared by the runs; need >= 3 "
                                 f"(set train.eval_every to a tenth of train.steps)")
    by_run = [dict(c) for c in curves]
    mean = [sum(r[s] for r in by_run) / len(by_run) for s in shared]
    sign = -1.0 if lower_is_better(metric) else 1.0  # the rule reads "better" as "larger"
    final, plateau = mean[-1], sign * max(sign * v for v in mean)
    cut = (1 - TAIL) * shared[-1]
    late_step = [s for s in shared if s <= cut][-1]
    late = mean[shared.index(late_step)]
    gains = [r[shared[-1]] - r[late_step] for r in by_run]  # each run's own last-quarter gain
    gain_se = (statistics.stdev(gains) / math.sqrt(len(gains))) if len(gains) >= 2 else float("nan")
    if any(not 0.0 <= v <= 1.0 for v in mean):
        tol = tol * max(1.0, abs(plateau))  # FID, dB: 1% of the plateau
    ok = sign * (plateau - final) <= tol and sign * (final - late) <= tol
    why = ("within tolerance of its plateau and flat" if ok else
           ("still rising" if sign > 0 else "still falling") + ": train longer" if sign * (final - late) > tol
           else "fell from its plateau: stop earlier")
    return BudgetCheck(arm, metric, len(curves), shared, mean, plateau, final, late, ok, why, gain_se, tol)


def run_curve(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    """``val_<metric>`` over training (metrics.jsonl) plus the final value (results.json)."""
    key = f"val_{metric}"
    pts: dict[int, float] = {}
    f = run_dir / "metrics.jsonl"
    if f.is_file():
        for line in f.read_text(encoding="utf-8").splitlines():
            m = json.loads(line)
            if isinstance(m.get(key), (int, float)) and isinstance(m.get("step"), int):
                pts[m["step"]] = float(m[key])
    res_f, cfg_f = run_dir / "results.json", run_dir / "config.yaml"
    if res_f.is_file() and cfg_f.is_file():
        res = json.loads(res_f.read_text())
        steps = (yaml.safe_load(cfg_f.read_text()) or {}).get("train", {}).get("steps")
        if isinstance(res.get(key), (int, float)) and isinstance(steps, int):
            pts[steps] = float(res[key])
    return sorted(pts.items())


def baseline_arm(plan: Any) -> Any:
    """The arm whose swept values equal the base recipe's own values, else the first arm."""
    from modalab.config import load

    cfg = yaml.safe_load(load(plan.recipe, list(plan.overrides)).to_yaml())
    for arm in plan.arms:
        same = True
        for key, text in arm.params.items():
            node: Any = cfg
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node != yaml.safe_load(text):
                same = False
                break
        if same:
            return arm
    return plan.arms[0]


def sweep_budget(root: Path, metric: str = "zeroshot_top1") -> BudgetCheck:
    """The rule on the baseline arm's finished runs of a sweep directory."""
    from modalab.experiment.sweep import load_plan, run_status

    plan = load_plan(root)
    arm = baseline_arm(plan)
    curves = [run_curve(j.path, metric) for j in plan.jobs if j.arm == arm and run_status(j.path) == "finished"]
    return plateau_check([c for c in curves if c], arm.name, f"val_{metric}")


def find_budget(plan: Any, run_pilot: Callable[[list[str], Path], int], metric: str = "zeroshot_top1",
                max_doublings: int = 4) -> tuple[int, list[dict]]:
    """Double the baseline's step count until its validation curve has converged.

    ``run_pilot(overrides, out_dir) -> exit code`` trains one run. Returns the chosen step count and
    the pilots' checks; writes both to ``<sweep>/budget.json``.
    """
    from modalab.config import load

    arm = baseline_arm(plan)
    steps = load(plan.recipe, list(plan.overrides)).train.steps
    pilots = []
    for _ in range(max_doublings + 1):
        out = plan.root / "budget" / f"steps{steps}"
        over = [*plan.overrides, *arm.overrides, f"train.steps={steps}",
                f"train.eval_every={max(1, steps // 10)}", f"run.seed={plan.seeds[0]}"]
        if not (out / "results.json").is_file():
            rc = run_pilot(over, out)
            if rc != 0:
                raise RuntimeError(f"budget pilot at {steps} steps failed (exit {rc}); see {out}")
        check = plateau_check([run_curve(out, metric)], arm.name, f"val_{metric}")
        pilots.append({**asdict(check), "curve_steps": check.steps, "steps": steps, "dir": str(out)})
        if check.converged:
            break
        steps *= 2
    chosen = pilots[-1]["steps"]
    rec = {"rule": f"baseline within {TOL} of its val plateau and flat over the last {TAIL:.0%}",
           "baseline_arm": arm.name, "metric": f"val_{metric}", "steps": chosen,
           "converged": bool(pilots[-1]["converged"]), "pilots": pilots}
    (plan.root / BUDGET_FILE).write_text(json.dumps(rec, indent=2), encoding="utf-8")
    return chosen, pilots
