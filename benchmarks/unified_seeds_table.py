"""Per-seed tables of finished ``recipes/unified_digits.yaml`` runs: the val sweep, then the test.

    python benchmarks/unified_seeds_table.py RUN_DIR...   (one run directory per seed)

Prints Markdown:
(1) the validation sweep of each seed (``artifacts/val_sweep.json``): per path and setting the val
    class-match (cm), its one-sided Wilson lower bound at the run's ``eval.select_confidence`` and
    the val FID, beside the train-vs-val floor, and the setting the rule chose (marked when no
    setting cleared ``eval.select_min_class_match`` and the rule fell back to the highest cm);
(2) the test table, read once per seed: understanding, both class-matches, FIDs beside the
    train-vs-test floor, precision / recall and sampling time, with the mean +/- sd over seeds and
    how many seeds reach issue 21's target (>= 0.90) on each accuracy row.
Each seed trains its own FID feature CNN, so FIDs of different seeds are in different units: read
the FID / floor rows across seeds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml

from modalab.eval.sampler_select import clears, wilson_lower

TARGET = 0.90
# (label, results.json key or a function of the results, format, row counted against TARGET)
TEST_ROWS = [
    ("understand accuracy", "test_understand_accuracy", "{:.3f}", True),
    ("class-match AR", "test_generate_class_match_ar", "{:.3f}", True),
    ("class-match diffusion", "test_generate_class_match_diffusion", "{:.3f}", True),
    ("FID AR", "test_generate_fid_ar", "{:.1f}", False),
    ("FID diffusion", "test_generate_fid_diffusion", "{:.1f}", False),
    ("floor: train vs test, same n", "test_fid_real_train_same_n", "{:.1f}", False),
    ("FID / floor: AR", lambda r: r["test_generate_fid_ar"] / r["test_fid_real_train_same_n"], "{:.2f}", False),
    ("FID / floor: diffusion",
     lambda r: r["test_generate_fid_diffusion"] / r["test_fid_real_train_same_n"], "{:.2f}", False),
    ("precision AR", "test_generate_precision_ar", "{:.3f}", False),
    ("recall AR", "test_generate_recall_ar", "{:.3f}", False),
    ("precision diffusion", "test_generate_precision_diffusion", "{:.3f}", False),
    ("recall diffusion", "test_generate_recall_diffusion", "{:.3f}", False),
    ("s per image AR (batch of 200)", "test_sample_seconds_per_image_ar", "{:.4f}", False),
    ("s per image diffusion (batch of 200)", "test_sample_seconds_per_image_diffusion", "{:.3f}", False),
    ("chosen AR temperature", "test_chosen_ar_temperature", "{:.2f}", False),
    ("chosen guidance", "test_chosen_guidance", "{:.2f}", False),
]


def _value(res: dict, key) -> float:
    if callable(key):
        return float(key(res))
    if key not in res:
        raise KeyError(f"results.json has no '{key}' (a run before this recipe's val sweep?)")
    return float(res[key])


def sweep_table(runs: list[Path]) -> list[str]:
    lines = ["| seed | path | setting: cm (lower bound) FID | floor (train vs val) | chosen |", "|---|---|---|---|---|"]
    for run in runs:
        sweep = json.loads((run / "artifacts" / "val_sweep.json").read_text())
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        conf, bar = cfg["eval"].get("select_confidence", 0.0), cfg["eval"].get("select_min_class_match", TARGET)
        seed = cfg["run"]["seed"]
        for path, knob in (("ar", "temperature"), ("diffusion", "guidance")):
            if path not in sweep:
                continue
            rows = sweep[path]["rows"]
            cells = []
            for r in rows:
                lb = wilson_lower(r["class_match"], int(r["n"]), conf)
                interval = f" t<={r['guidance_interval'][1]}" if r.get("guidance_interval") else ""
                cells.append(f"{knob[0]} {r[knob]:g}{interval}: {r['class_match']:.3f} ({lb:.3f}) {r['fid']:.1f}")
            best = rows[sweep[path]["chosen"]]
            missed = not clears(best, bar, conf)
            lines.append(f"| {seed} | {path} | {'; '.join(cells)} | {sweep['fid_floor_train_vs_val']:.1f} | "
                         f"{knob} {best[knob]:g}{' (none cleared the bar)' if missed else ''} |")
    return lines


def test_table(runs: list[Path]) -> list[str]:
    results = [json.loads((run / "results.json").read_text()) for run in runs]
    seeds = [yaml.safe_load((run / "config.yaml").read_text())["run"]["seed"] for run in runs]
    head = "| metric (test) | " + " | ".join(f"s{s}" for s in seeds) + f" | mean +/- sd | seeds >= {TARGET} |"
    lines = [head, "|---" * (len(runs) + 3) + "|"]
    for label, key, fmt, counted in TEST_ROWS:
        v = np.array([_value(r, key) for r in results])
        spread = f"{fmt.format(v.mean())} +/- {fmt.format(v.std(ddof=1))}" if len(v) > 1 else fmt.format(v[0])
        hits = f"{int((v >= TARGET).sum())}/{len(v)}" if counted else ""
        lines.append(f"| {label} | " + " | ".join(fmt.format(x) for x in v) + f" | {spread} | {hits} |")
    return lines


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    runs = [Path(a) for a in argv]
    for run in runs:
        if not (run / "results.json").is_file():
            raise SystemExit(f"{run}: no results.json (is the run finished?)")
    print("\n".join(["## Val sweep (cm = val class-match, its Wilson lower bound in brackets)", "",
                     *sweep_table(runs), "", "## Test, read once per seed", "", *test_table(runs)]))


if __name__ == "__main__":
    main(sys.argv[1:])
