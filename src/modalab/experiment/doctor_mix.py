"""Doctor check: realised data-mix proportions against their targets.

Tasks that mix sources or objectives with ``data/mixing.py`` log, every ``log_every`` steps,
``mix/target/<name>`` (the schedule's weight at that step), ``mix/realised_phase/<name>`` (the
share drawn so far in the current phase), ``mix/phase`` and ``mix/draws_phase``. For each phase
the last record's realised share is compared with the mean logged target of that phase (exact for
piecewise-constant schedules, the average target for interpolated ones). A share is flagged when
it is both practically off (more than ``MIN_GAP`` absolute) and statistically off (more than
``Z_LIMIT`` binomial standard errors at the phase's number of draws): a sampler bug, a source
that ran dry, or weights that were not what the recipe meant.
"""

from __future__ import annotations

import math
from collections import defaultdict

from modalab.experiment.doctor_view import Finding, RunView

MIN_GAP = 0.02
Z_LIMIT = 4.0


def check_mix(v: RunView) -> list[Finding]:
    recs = [m for m in v.metrics if "mix/phase" in m and "mix/draws_phase" in m]
    if not recs:
        return []
    by_phase: dict[int, list[dict]] = defaultdict(list)
    for r in recs:
        by_phase[int(r["mix/phase"])].append(r)
    names = sorted(k.split("/", 2)[2] for k in recs[0] if k.startswith("mix/target/"))
    out = []
    for phase, rs in sorted(by_phase.items()):
        last = rs[-1]
        n = float(last["mix/draws_phase"])
        if n <= 0:
            continue
        for name in names:
            target = sum(r[f"mix/target/{name}"] for r in rs) / len(rs)
            real = float(last.get(f"mix/realised_phase/{name}", 0.0))
            se = math.sqrt(max(target * (1 - target), 1e-12) / n)
            z = abs(real - target) / se
            if abs(real - target) > MIN_GAP and z > Z_LIMIT:
                out.append(Finding(
                    "data_mix", "warning",
                    f"phase {phase}: '{name}' made up {real:.1%} of the draws, target {target:.1%}",
                    f"{int(n)} draws in phase {phase} up to step {last.get('step')}; "
                    f"{z:.1f} standard errors from the target",
                    "check the mixture weights in the recipe (loss.mix / data mix), that every source "
                    "has data left, and the sampler's seed handling",
                ))
    return out
