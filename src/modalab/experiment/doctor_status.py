"""``doctor`` check of a run's recorded state: is what run.json says still true?

- ``running`` while the recorded process (``pid`` on ``host``) is gone: the run was killed
  (SIGKILL, out of memory, a reboot) and will never finish by itself -> error (stale run).
- ``interrupted``: stopped by a signal, normally with a checkpoint -> warning with the resume command.
- inputs skipped under ``data.on_error=skip`` -> warning with the count and the first reason.
"""

from __future__ import annotations

from modalab.experiment.doctor_view import Finding, RunView
from modalab.experiment.liveness import run_process_state


def check_status(v: RunView) -> list[Finding]:
    out = []
    info = v.info
    status = info.get("status")
    if status == "running":
        state = run_process_state(info)
        host = info.get("host") or (info.get("machine") or {}).get("host")
        if state == "dead":
            last = max((m["step"] for m in v.metrics if isinstance(m.get("step"), int)), default=None)
            out.append(Finding(
                "stale_run", "error",
                "run.json says 'running' but its process is gone: the run was killed and will not finish",
                f"pid {info.get('pid')} on {host} is not alive; started {info.get('started')}; "
                f"last logged step {last}",
                "continue it with `modalab run RECIPE --out RUN_DIR --resume` (or --resume --restart "
                "when no valid checkpoint is left)",
            ))
        elif state == "unknown":
            out.append(Finding(
                "status", "info", "run.json says 'running'; its process cannot be checked from here",
                f"pid {info.get('pid')} on {host}", "run doctor on the machine that runs it"))
    elif status == "interrupted":
        out.append(Finding(
            "interrupted", "warning", "the run was interrupted before it finished",
            str(info.get("error", "")), "continue it with `modalab run RECIPE --out RUN_DIR --resume`"))
    skipped = v.results.get("skipped") or []
    n = v.results.get("num_skipped", len(skipped))
    if isinstance(n, int) and n > 0:
        out.append(Finding(
            "skipped_inputs", "warning", f"{n} input(s) were skipped (data.on_error=skip)",
            f"first: {skipped[0] if skipped else '?'}",
            "fix or remove the listed inputs; the run trained and/or evaluated on fewer samples than listed"))
    return out
