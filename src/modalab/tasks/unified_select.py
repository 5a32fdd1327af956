"""The unified model's samplers, chosen on the validation split before the test.

``eval.sweep_ar_temperature`` lists AR temperatures and ``eval.sweep_guidance`` diffusion guidance
settings (weight and optional interval). Each setting samples its path for the validation captions,
``eval.select_repeats`` times each, and is scored on val only: class-match by the task's judge and
FID against the real validation images in the space of the in-house feature CNN (trained on the
training split, cached in the run's ``eval_nets/``). Per path the rule is the AR vs diffusion
task's (``eval/sampler_select.py``): the lowest val FID among settings whose val class-match (its
one-sided Wilson lower bound at ``eval.select_confidence``, when > 0) reaches
``eval.select_min_class_match``, else the highest class-match. Every row and the choice go to
``artifacts/val_sweep.json``; the test split is then scored once, with the chosen settings.
"""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any

import torch

from modalab.eval.feature_net import FeatureNetConfig, cached_feature_net
from modalab.eval.generation import fid
from modalab.eval.sampler_select import clears, pick, pick_rule

if TYPE_CHECKING:
    from modalab.tasks.unified import UnifiedTask


def select_on_val(task: "UnifiedTask") -> tuple[dict[str, Any], dict[str, bool]]:
    """The ``eval`` fields the test uses (ar_temperature; guidance, guidance_interval), chosen on val,
    and per swept path whether the chosen setting cleared the bar (False: none did, so the rule fell
    back to the highest class-match)."""
    e, seed = task.eval_cfg, task.recipe.run.seed
    if task.data.val is None:
        raise ValueError("task unified: eval.sweep_guidance / sweep_ar_temperature need a validation split; "
                         "set data.val_fraction > 0")
    tr_x, tr_y, _ = task._tensors(task.data.train)
    va_x, va_y, va_t = task._tensors(task.data.val)
    n = min(e.generate_samples, len(va_t))
    prompts, labels = va_t[:n] * e.select_repeats, va_y[:n].repeat(e.select_repeats)  # (n * repeats,)
    net = cached_feature_net(tr_x, tr_y, FeatureNetConfig(steps=e.feature_net_steps, seed=seed),
                             task.run.path / "eval_nets")
    real = net.embed(va_x)  # (N_val, F)
    floor_idx = torch.randperm(len(tr_x), generator=torch.Generator().manual_seed(seed))[: len(va_x)]
    sweeps = {"ar": [{"temperature": t} for t in e.sweep_ar_temperature],
              "diffusion": [{"guidance": g.guidance, "guidance_interval": g.guidance_interval}
                            for g in e.sweep_guidance]}
    log: dict[str, Any] = {"rule": pick_rule(e.select_min_class_match, e.select_confidence), "split": "val",
                           "n": len(prompts), "captions": n, "repeats": e.select_repeats,
                           "fid_floor_train_vs_val": fid(real, net.embed(tr_x[floor_idx]))}
    chosen: dict[str, Any] = {}
    cleared: dict[str, bool] = {}
    for path, cands in sweeps.items():
        if not cands:
            continue
        rows = []
        for setting in cands:
            gen = task.generate(prompts, path, seed=seed, **setting)
            rows.append({**setting, "n": len(prompts), "class_match": task._judge().class_match(gen, labels),
                         "fid": fid(real, net.embed(gen))})
        i = pick(rows, e.select_min_class_match, e.select_confidence)
        cleared[path] = clears(rows[i], e.select_min_class_match, e.select_confidence)
        log[path] = {"rows": rows, "chosen": i, "cleared": cleared[path]}
        if not cleared[path]:
            warnings.warn(f"task unified: no {path} setting cleared the val bar ({log['rule']}); the test uses "
                          f"the highest val class-match, {rows[i]['class_match']:.3f}", stacklevel=2)
        if path == "ar":
            chosen["ar_temperature"] = rows[i]["temperature"]
        else:
            chosen.update(guidance=rows[i]["guidance"], guidance_interval=rows[i]["guidance_interval"])
    log["chosen"] = chosen
    out = task.run.path / "artifacts" / "val_sweep.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(log, indent=1))
    return chosen, cleared
