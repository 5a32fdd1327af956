"""The unified model's diffusion sampler, chosen on the validation split before the test.

``eval.sweep_guidance`` lists guidance settings (weight and optional interval); each samples the
diffusion path for the validation captions and is scored on val only: class-match by the task's
judge and FID against the real validation images in the space of the in-house feature CNN (trained
on the training split, cached in the run's ``eval_nets/``). The rule is the AR vs diffusion task's
(``tasks/ar_vs_diffusion_eval.pick``): the lowest val FID among settings with val class-match
>= ``eval.select_min_class_match``, else the highest class-match. The choice and every row go to
``artifacts/val_sweep.json``; the test split is then scored once, with the chosen setting.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch

from modalab.eval.feature_net import FeatureNetConfig, cached_feature_net
from modalab.eval.generation import fid
from modalab.tasks.ar_vs_diffusion_eval import pick, pick_rule

if TYPE_CHECKING:
    from modalab.tasks.unified import UnifiedTask


def select_guidance_on_val(task: "UnifiedTask") -> dict[str, Any]:
    """The ``eval`` fields (guidance, guidance_interval) the test uses, chosen on val."""
    e, seed = task.eval_cfg, task.recipe.run.seed
    if task.data.val is None:
        raise ValueError("task unified: eval.sweep_guidance needs a validation split; set data.val_fraction > 0")
    tr_x, tr_y, _ = task._tensors(task.data.train)
    va_x, va_y, va_t = task._tensors(task.data.val)
    n = min(e.generate_samples, len(va_t))
    net = cached_feature_net(tr_x, tr_y, FeatureNetConfig(steps=e.feature_net_steps, seed=seed),
                             task.run.path / "eval_nets")
    real = net.embed(va_x)  # (N_val, F)
    floor_idx = torch.randperm(len(tr_x), generator=torch.Generator().manual_seed(seed))[: len(va_x)]
    rows = []
    for cand in e.sweep_guidance:
        setting = {"guidance": cand.guidance, "guidance_interval": cand.guidance_interval}
        gen = task.generate(va_t[:n], "diffusion", seed=seed, **setting)
        rows.append({**setting, "class_match": task._judge().class_match(gen, va_y[:n]),
                     "fid": fid(real, net.embed(gen))})
    i = pick(rows, e.select_min_class_match)
    log = {"rule": pick_rule(e.select_min_class_match), "split": "val", "n": n,
           "fid_floor_train_vs_val": fid(real, net.embed(tr_x[floor_idx])), "rows": rows, "chosen": i}
    out = task.run.path / "artifacts" / "val_sweep.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(log, indent=1))
    return {"guidance": rows[i]["guidance"], "guidance_interval": rows[i]["guidance_interval"]}
