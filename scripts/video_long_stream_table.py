"""The accuracy / memory vs video length table of a ``video_long_stream`` sweep, with paired tests.

    python scripts/video_long_stream_table.py runs/sweeps/video_long_stream-<stamp>

Reads every ``results.json`` under the sweep folder (one per seed), and prints per length: mean top-1
and its 95% t-interval over seeds for each read mode, the paired difference stream - uniform and
stream - first_window (t-interval, paired t p, exact sign-flip p, MDE at 80% power), and the mean peak
memory of the streamed and the all-at-once memory probes. Pairs are runs of the same seed (same split,
same weights): the read modes are three ways to read the same test videos with one model.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from modalab.experiment.paired import mde_paired, paired_t, sign_flip_p, t_interval
from modalab.experiment.stats import mean_ci


def load_runs(folder: Path) -> list[dict]:
    runs = [json.loads(p.read_text()) for p in sorted(folder.rglob("results.json"))]
    if not runs:
        raise SystemExit(f"{folder}: no results.json found; pass a video_long_stream run or sweep folder")
    return runs


def lengths(run: dict) -> list[int]:
    return sorted({int(m.group(1)) for k in run if (m := re.fullmatch(r"stream/top1@L(\d+)", k))})


def table(runs: list[dict]) -> str:
    out = [f"{len(runs)} run(s); top-1 mean [95% CI] per read mode; d = stream - other (paired by seed)",
           "| frames | stream | uniform | first window | d vs uniform [CI] (t p / sign-flip p, MDE) "
           "| d vs first window [CI] (t p / sign-flip p, MDE) | peak MB stream / all at once |",
           "|---:|---|---|---|---|---|---|"]
    for n in lengths(runs[0]):
        cells = [str(n)]
        vals = {m: [r[f"{m}/top1@L{n}"] for r in runs] for m in ("stream", "uniform", "first_window")}
        for m in ("stream", "uniform", "first_window"):
            mean, _, lo, hi = mean_ci(vals[m])
            cells.append(f"{mean:.3f} [{lo:.3f}, {hi:.3f}]")
        for other in ("uniform", "first_window"):
            d = [s - o for s, o in zip(vals["stream"], vals[other])]
            lo, hi = t_interval(d)
            sd = float(np.std(d, ddof=1)) if len(d) > 1 else float("nan")
            p_t = paired_t(vals[other], vals["stream"])[1] if len(d) > 1 else float("nan")
            cells.append(f"{sum(d) / len(d):+.3f} [{lo:+.3f}, {hi:+.3f}] ({p_t:.3g} / "
                         f"{sign_flip_p(d):.3g}, MDE {mde_paired(sd, len(d)):.3f})")
        mem = [(r.get(f"stream/peak_mb@L{n}"), r.get(f"all_at_once/peak_mb@L{n}")) for r in runs]
        mem = [m for m in mem if None not in m]
        cells.append(f"{sum(a for a, _ in mem) / len(mem):.1f} / {sum(b for _, b in mem) / len(mem):.1f}"
                     if mem else "-")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    print(table(load_runs(args.folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
