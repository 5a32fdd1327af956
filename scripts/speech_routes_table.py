"""The cascade-vs-end-to-end table from speech_routes runs (one results.json per seed).

    python scripts/speech_routes_table.py RUN_DIR [RUN_DIR ...] [--split test|val]

Prints, per route, the mean and 95 % t-interval over seeds of word / digit / mode / stress accuracy
and word accuracy split by whether the cascade's ASR transcript was right; then paired t-tests over
seeds (same seed = same data and initialisation stream) of each end-to-end route against the cascade
and of e2e_prosody against e2e, with the minimum detectable effect (80 % power, alpha 0.05) of the
design at that number of seeds (``experiment/paired.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

from modalab.experiment.paired import mde_paired, paired_t
from modalab.experiment.stats import mean_ci

ROUTES = ("cascade", "e2e", "e2e_prosody")
KEYS = ("word_acc", "digit_acc", "mode_acc", "stress_acc", "prosody_acc", "word_acc|asr_ok", "word_acc|asr_err")
PAIRS = (("cascade", "e2e"), ("cascade", "e2e_prosody"), ("e2e", "e2e_prosody"))


def load(dirs: list[Path], split: str) -> list[dict]:
    out = []
    for d in dirs:
        f = d / "results.json" if d.is_dir() else d
        if not f.is_file():
            sys.exit(f"speech_routes_table: {f} not found (pass run directories holding results.json)")
        r = json.loads(f.read_text())
        cfg = f.parent / "config.yaml"
        seed = (yaml.safe_load(cfg.read_text()) or {}).get("run", {}).get("seed") if cfg.is_file() else None
        pre = "val_" if split == "val" else ""
        out.append({"seed": seed, "asr_seq_acc": r.get(f"{pre}asr/seq_acc"),
                    **{f"{rt}/{k}": r.get(f"{pre}{rt}/{k}") for rt in ROUTES for k in KEYS}})
    return out


def fmt(vals: list[float]) -> str:
    vals = [float(v) for v in vals if v is not None]  # NaN may be stored as a string
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return "-"
    m, _, lo, hi = mean_ci(vals)
    return f"{m:.3f}" if len(vals) < 2 else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--split", choices=("test", "val"), default="test")
    a = ap.parse_args(argv)
    rows = load(a.runs, a.split)
    print(f"split {a.split}, {len(rows)} run(s), seeds {[r['seed'] for r in rows]}; "
          f"ASR exact-transcript rate {fmt([r['asr_seq_acc'] for r in rows])}")
    print("| route | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    for rt in ROUTES:
        print(f"| {rt} | " + " | ".join(fmt([r[f'{rt}/{k}'] for r in rows]) for k in KEYS) + " |")
    if len(rows) < 2:
        return
    print("\npaired t over seeds (b - a), with the design's MDE at 80 % power:")
    for k in ("word_acc", "mode_acc", "stress_acc"):
        for x, y in PAIRS:
            av, bv = [float(r[f"{x}/{k}"]) for r in rows], [float(r[f"{y}/{k}"]) for r in rows]
            d = [q - p for p, q in zip(av, bv)]
            sd = mean_ci(d)[1]
            t, p = paired_t(av, bv)
            print(f"  {k}: {y} - {x} = {sum(d) / len(d):+.3f}  t={t:.2f} p={p:.3g}  "
                  f"MDE={mde_paired(sd, len(d)):.3f}")


if __name__ == "__main__":
    main()
