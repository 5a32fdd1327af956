"""Run and sweep directories built by hand for report tests (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from modalab.eval.examples import retrieval_examples
from modalab.experiment.rundir import RunDir


def fake_run(path: Path, steps: int = 60) -> RunDir:
    """A finished contrastive-looking run: training records, val_ records, monitors, artifacts."""
    rng = np.random.default_rng(0)
    rd = RunDir.create(path, "", "x")
    rd.write_run_info({"name": "fake_clip", "seed": 0, "status": "finished", "recipe": "recipes/clip_digits.yaml"})
    rd.write_config("train:\n  steps: 60\n")
    for s in range(10, steps + 1, 10):
        rd.log({"step": s, "loss": 4.0 - s / 30, "lr": 1e-3, "logit_scale": 14.0 + s / 100,
                "grad_norm": 3.0 / s ** 0.5, "samples_per_s": 300.0 + s})
        if s % 20 == 0:
            rd.log({"step": s, "val_zeroshot_top1": 0.3 + s / 200, "val_image_to_text_R@1": 0.2 + s / 200,
                    "val_monitor/sim_margin": 0.1})
    results = {"zeroshot_top1": 0.61, "zeroshot_top5": 0.97, "image_to_text_R@1": 0.55,
               "text_to_image_R@1": 0.7, "num_train": 1347, "num_test": 450, "wall_seconds": 30.0,
               "monitor/sim_margin": 0.2, "monitor/erank_image": 12.0, "monitor/modality_gap": 0.4,
               "monitor/tau": 0.07, "monitor_warnings": [], "skipped": []}
    rd.write_results(results)
    rd.log({"step": steps, "event": "final", **{k: v for k, v in results.items() if isinstance(v, float)}})
    n, d = 40, 8
    labels = torch.arange(n) % 10
    centers = torch.nn.functional.normalize(torch.randn(10, d), dim=-1)
    img = torch.nn.functional.normalize(centers[labels] + 0.5 * torch.randn(n, d), dim=-1)
    txt = centers[labels]
    images = [torch.rand(1, 16, 16) for _ in range(n)]
    texts = [f"a handwritten {int(y)}" for y in labels]
    rd.write_artifact("retrieval_examples", retrieval_examples(img, txt, labels, images, texts))
    rd.write_artifact("similarity_distribution", {"positive": rng.normal(0.6, 0.1, 100).tolist(),
                                                  "negative": rng.normal(0.1, 0.2, 400).tolist()})
    return rd


def long_arm_sweep(root: Path, seeds=(0, 1)) -> Path:
    """A finished sweep whose arms have very long names (a stage list) and categorical values."""
    rng = np.random.default_rng(0)
    key1, key2 = "train.stages", "loss.name"
    v1 = ["[{steps: 100, trainable: [image_encoder.*, text_encoder.*], lr: {image_encoder.*: 0.0001}}, "
          "{steps: 300, trainable: ['*'], lr: {text_encoder.*: 0.00003}}]", "[]"]
    v2 = ["info_nce", "siglip"]
    arms = []
    for a in v1:
        for b in v2:
            name = f"stages-{a}__name-{b}".replace(" ", "_").replace("'", "")[:180]
            arms.append({"name": name, "overrides": [f"{key1}={a}", f"{key2}={b}"], "params": {key1: a, key2: b}})
    root.mkdir(parents=True)
    (root / "sweep.json").write_text(json.dumps({
        "recipe": "recipes/clip_digits.yaml", "grid": {key1: v1, key2: v2}, "seeds": list(seeds), "overrides": [],
        "arms": arms,
        "runs": [{"arm": a["name"], "seed": s, "dir": f"{a['name']}/seed{s}"} for a in arms for s in seeds]}))
    (root / "recipe.yaml").write_text("train:\n  steps: 100\n")
    for i, a in enumerate(arms):
        for s in seeds:
            rd = RunDir.create(root / a["name"] / f"seed{s}", "", "x")
            rd.write_run_info({"name": "x", "seed": s, "status": "finished"})
            for step in range(10, 110, 10):
                rd.log({"step": step, "loss": 4 - step / 50 - i / 10, "tau": 0.07})
            rd.write_results({"zeroshot_top1": 0.6 + i / 20 + rng.normal(0, 0.01), "image_to_text_R@1": 0.5,
                              "wall_seconds": 30.0})
            rd.write_artifact("similarity_distribution", {
                "positive": rng.normal(0.6, 0.1, 100).tolist(), "negative": rng.normal(0.1, 0.2, 300).tolist()})
    return root
