"""The AR vs diffusion table (chapter 5.2.2-5.2.3) from finished ``recipes/ar_vs_diffusion.yaml`` runs.

    python benchmarks/ar_vs_diffusion_table.py /tmp/avd/seed0 /tmp/avd/seed1 ...

Prints Markdown: (1) the validation curve of both paths (class-match and FID at every
``train.eval_every``, mean over seeds, the plateau check), (2) the sampler each seed chose on val,
(3) the test table: per row the mean +/- std over seeds of each path, the paired difference
(diffusion - AR) with how many seeds agree in sign, its minimum detectable effect at n seeds
(paired t, two-sided alpha 0.05, power 0.8: (t_0.975 + t_0.8) * sd_diff / sqrt(n)), and the
chapter's own words (5.2.2 table, verbatim). With n = 5 no exact sign test reaches p < 0.05
(its smallest p is 2 / 2^5 = 0.0625), so the verdicts are descriptive. Each seed trains its own FID
feature CNN, so FIDs of different seeds are in different units: read them beside the floor (the
FID / floor row).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from modalab.experiment.budget import plateau_check, run_curve

# (label, key without the path suffix, format, chapter words of 5.2.2's table: AR / DM)
ROWS = [
    ("FID (test, in-house feature CNN)", "generate_fid", "{:.1f}", '5.2.2 生成质量: AR "中等", DM "高"'),
    ("FID / floor (test; floor: real train vs test at n = 200, same feature CNN)", "fid_ratio", "{:.2f}", ""),
    ("KID / 1e3 (test; eval/generation.py units)", "generate_kid", "{:.0f}", ""),
    ("precision (test)", "generate_precision", "{:.3f}", ""),
    ("recall (test)", "generate_recall", "{:.3f}", ""),
    ("CLIP-S, Hessel w = 2.5 (test)", "generate_clip_score", "{:.3f}",
     '5.2.3 "语义保持：用 CLIP score 验证语义一致性"'),
    ("class-match (test, SVM judge)", "class_match", "{:.3f}", ""),
    ("CPU s per image, batch of one", "sample_cpu_s_per_image", "{:.4f}", '5.2.2 推理速度: AR "快（单次）", DM "慢（多步）"'),
    ("CPU s per batch of 200", "sample_cpu_s_per_batch", "{:.2f}", ""),
    ("peak MiB, one training step (B = 64)", "peak_mib_train_step", "{:.1f}", '5.2.2 内存需求: AR "低", DM "高"'),
    ("peak MiB, sampling 200", "peak_mib_sample", "{:.1f}", ""),
    ("final training loss (mean of last 5%)", "final_loss", "{:.4f}", '5.2.2 训练稳定性: AR "高", DM "中等"'),
    ("loss spikes (> 1.5 x median of previous 20 steps)", "loss_spikes", "{:.1f}", ""),
    ("edit: class-match to the new caption", "edit_class_match", "{:.3f}", '5.2.2 可控性: AR "强（token级）", DM "弱（全局）"'),
    ("edit: mean abs pixel change outside the region", "edit_outside_change", "{:.4f}", ""),
    ("edit: same, vs the real image", "edit_outside_change_vs_real", "{:.4f}", ""),
    ("edit: CPU s per image", "edit_cpu_s_per_image", "{:.3f}", ""),
]
SCALE = {"generate_kid": 1e-3}


def load(run: Path) -> tuple[dict, list[dict]]:
    res = json.loads((run / "results.json").read_text())
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return res, recs


def ms(v: np.ndarray, fmt: str) -> str:
    return f"{fmt.format(v.mean())} +/- {fmt.format(v.std(ddof=1))}" if len(v) > 1 else fmt.format(v[0])


def main(runs: list[Path]) -> None:
    data = [load(r) for r in runs]
    for res, _ in data:  # each seed trains its own feature CNN: FID in units of its own floor
        for p in ("ar", "diffusion"):
            res[f"fid_ratio_{p}"] = res[f"generate_fid_{p}"] / res["fid_real_train_same_n"]
    n = len(data)
    print(f"runs: {', '.join(str(r) for r in runs)} (n = {n} seeds)\n")
    # 1. validation curve
    for _, recs in data:
        for r in recs:
            if "val_fid_floor" in r:
                for p in ("ar", "diffusion"):
                    r[f"val_fid/floor_{p}"] = r[f"val_fid_{p}"] / r["val_fid_floor"]
    keys = ("val_class_match_ar", "val_class_match_diffusion", "val_fid/floor_ar", "val_fid/floor_diffusion",
            "val_fid_floor")
    steps = sorted({r["step"] for _, recs in data for r in recs if "val_class_match_ar" in r})
    print("| step (val, sampler: AR T = 1, guidance 1) | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for s in steps:
        cells = []
        for k in keys:
            v = np.array([next(r[k] for r in recs if r.get("step") == s and k in r) for _, recs in data
                          if any(r.get("step") == s and k in r for r in recs)])
            cells.append(ms(v, "{:.3f}" if "match" in k else "{:.2f}") if len(v) else "-")
        print(f"| {s} | " + " | ".join(cells) + " |")
    for p in ("ar", "diffusion"):  # the budget rule (experiment/budget.py) on both paths
        key = f"class_match_{p}"
        print("\n" + plateau_check([run_curve(r, key) for r in runs], p, f"val_{key}").line(), end="")
    print()
    for (res, recs), r in zip(data, runs):  # a resume from an old checkpoint loses earlier losses
        last = max((x["step"] for x in recs if "step" in x), default=0)
        for p in ("ar", "diffusion"):
            if res.get(f"loss_history_steps_{p}", last) < last:
                print(f"\nWARNING {r}: loss rows of {p} cover {res[f'loss_history_steps_{p}']} of {last} steps")
    # 2. chosen samplers
    print("\n| seed run | chosen AR temperature | chosen guidance | interval |")
    print("|---|---|---|---|")
    for (res, _), r in zip(data, runs):
        lo, hi = res["chosen_guidance_lo"], res["chosen_guidance_hi"]
        fell = {p: " (none cleared the bar)" if res.get(f"chosen_cleared_bar_{p}", 1.0) == 0 else ""
                for p in ("ar", "diffusion")}  # the val rule's fallback (results since session 14)
        print(f"| {r.name} | {res['chosen_ar_temperature']}{fell['ar']} | "
              f"{res['chosen_guidance']}{fell['diffusion']} | "
              f"{'all' if lo < 0 else f't in [{lo}, {hi}]'} |")
    # 3. the table
    floor = np.array([d[0]["fid_real_floor"] for d in data])
    same_n = np.array([d[0]["fid_real_train_same_n"] for d in data])
    print(f"\nFID floors (test): real halves {ms(floor, '{:.2f}')}, real train vs test at n = 200 "
          f"{ms(same_n, '{:.2f}')}; CLIP-S of real test images "
          f"{ms(np.array([d[0]['clip_score_real'] for d in data]), '{:.3f}')}\n")
    print("| row (test) | AR | diffusion | diff. (DM - AR) | seeds DM > AR | MDE | chapter |")
    print("|---|---|---|---|---|---|---|")
    tq = stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1) if n > 1 else float("nan")
    for label, key, fmt, words in ROWS:
        if f"{key}_ar" not in data[0][0]:
            continue
        a = np.array([d[0][f"{key}_ar"] for d in data]) * SCALE.get(key, 1)
        b = np.array([d[0][f"{key}_diffusion"] for d in data]) * SCALE.get(key, 1)
        diff = b - a
        mde = tq * diff.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
        print(f"| {label} | {ms(a, fmt)} | {ms(b, fmt)} | {ms(diff, fmt)} | {int((diff > 0).sum())}/{n} | "
              f"{fmt.format(mde)} | {words} |")
    if n > 1:  # the two losses have different units (cross-entropy, MSE): compare their spread relatively
        cv = {p: np.array([d[0][f"final_loss_{p}"] for d in data]) for p in ("ar", "diffusion")}
        print("\nfinal loss over seeds, std / mean: " + ", ".join(
            f"{p} {v.std(ddof=1) / v.mean():.3f}" for p, v in cv.items()))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/ar_vs_diffusion_table.py RUN_DIR [RUN_DIR ...]")
    main([Path(p) for p in sys.argv[1:]])
