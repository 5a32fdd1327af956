"""The measurements of task ``ar_vs_diffusion`` (``tasks/ar_vs_diffusion.py``), one function per table part.

- ``score_split``: class-match (RBF-SVM judge fitted on the real training images) and, optionally,
  FID against the split's real images with the in-house feature CNN, beside the real-vs-real floor
  (as many real training images as the split has, against the split).
- ``select_on_val``: every ``eval.sweep_*`` setting scored on val (one path each); per path the
  rule ``eval.select_min_class_match`` picks one (lowest val FID among settings at or above the
  class-match bar, else the highest class-match; ``eval.select_confidence`` > 0 holds the class-match's
  Wilson lower bound to the bar, ``eval/sampler_select.py``) -> the sampler the test uses;
  artifacts/val_sweep.json.
- ``test_table``: ``select_on_val``, then the whole comparison on test once (see the task's
  docstring), flat keys per path.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from modalab.eval.curve_stability import count_spikes, final_loss
from modalab.eval.feature_net import FeatureNetConfig, cached_feature_net
from modalab.eval.generation import fid
from modalab.eval.generation_report import generation_report
from modalab.eval.judge import ClassJudge
from modalab.eval.peak_memory import peak_rss_mib
from modalab.eval.sampler_select import clears, pick, pick_rule
from modalab.eval.score_encoder import ScoreEncoderConfig
from modalab.models.editing import ar_edit_region, repaint_ddim

if TYPE_CHECKING:
    from modalab.tasks.ar_vs_diffusion import ArVsDiffusionTask, Sampler

PATHS = ("ar", "diffusion")


def judge(task: ArVsDiffusionTask) -> ClassJudge:
    if getattr(task, "_judge", None) is None:
        x, y, _ = task.tensors("train")
        task._judge = ClassJudge()
        task._judge.fit(x, y)
    return task._judge


def feature_net(task: ArVsDiffusionTask):
    x, y, _ = task.tensors("train")
    cfg = FeatureNetConfig(steps=task.eval_cfg.feature_net_steps, seed=task.recipe.run.seed)
    return cached_feature_net(x, y, cfg, task.run.path / "eval_nets")


def score_split(task: ArVsDiffusionTask, split: str, s: Sampler, fid: bool,
                paths: tuple[str, ...] = PATHS) -> dict[str, float]:
    """class_match_<path> (and fid_<path>, fid_floor) on the split's captions, n = generate_samples."""
    x, y, texts = task.tensors(split)
    n = min(task.eval_cfg.generate_samples, len(texts))
    res: dict[str, float] = {}
    net = feature_net(task) if fid else None
    real = net.embed(x) if net is not None else None  # (N, F)
    for path in paths:
        gen = task.sample(path, texts[:n], s, seed=task.recipe.run.seed)
        res[f"class_match_{path}"] = judge(task).class_match(gen, y[:n])
        if net is not None:
            res[f"fid_{path}"] = _fid(real, net.embed(gen))
    if net is not None:
        tr = task.tensors("train")[0]
        pick = torch.randperm(len(tr), generator=torch.Generator().manual_seed(task.recipe.run.seed))[:n]
        res["fid_floor"] = _fid(real, net.embed(tr[pick]))
    return res


_fid = fid  # the argument ``fid`` of score_split shadows the function


def select_on_val(task: ArVsDiffusionTask) -> tuple[Sampler, dict[str, bool]]:
    """The sampler the test uses: ``eval.sampler`` with each path's swept field chosen on val, and per
    swept path whether the chosen setting cleared the bar (False: the rule fell back)."""
    e = task.eval_cfg
    base = e.sampler
    n_val = min(e.generate_samples, len(task.tensors("val")[2]))  # the samples each class-match counts
    sweeps = {"ar": [base.model_copy(update={"ar_temperature": t}) for t in e.sweep_ar_temperature],
              "diffusion": [base.model_copy(update=g.model_dump()) for g in e.sweep_guidance]}
    log: dict[str, Any] = {"rule": pick_rule(e.select_min_class_match, e.select_confidence)}
    cleared: dict[str, bool] = {}
    chosen = base
    for path, cands in sweeps.items():
        if not cands:
            continue
        rows = []
        for s in cands:
            r = score_split(task, "val", s, fid=True, paths=(path,))
            rows.append({"class_match": r[f"class_match_{path}"], "fid": r[f"fid_{path}"], "n": n_val,
                         "fid_floor": r["fid_floor"], "sampler": s.model_dump(mode="json")})
        i = pick(rows, e.select_min_class_match, e.select_confidence)
        cleared[path] = clears(rows[i], e.select_min_class_match, e.select_confidence)
        log[path] = {"rows": rows, "chosen": i, "cleared": cleared[path]}
        keys = ("ar_temperature",) if path == "ar" else ("guidance", "guidance_interval")
        chosen = chosen.model_copy(update={k: getattr(cands[i], k) for k in keys})
    log["sampler"] = chosen.model_dump(mode="json")
    out = task.run.path / "artifacts" / "val_sweep.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(log, indent=1))
    return chosen, cleared


def _timed(fn) -> tuple[Any, float, float]:
    """(result, CPU seconds, wall seconds) of fn()."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def test_table(task: ArVsDiffusionTask) -> dict[str, Any]:
    e, seed = task.eval_cfg, task.recipe.run.seed
    s, cleared = select_on_val(task)  # val only; the test below is scored once with it
    x, y, texts = task.tensors("test")
    n = min(e.generate_samples, len(texts))
    lo, hi = s.guidance_interval or (-1, -1)
    res: dict[str, Any] = {"judge_test_accuracy": float((judge(task).predict(x) == y).float().mean()),
                           "generate_samples": n, "chosen_ar_temperature": s.ar_temperature,
                           "chosen_guidance": s.guidance, "chosen_guidance_lo": lo, "chosen_guidance_hi": hi,
                           **{f"chosen_cleared_bar_{p}": float(ok) for p, ok in cleared.items()}}
    gen: dict[str, Tensor] = {}
    for path in PATHS:
        sample = lambda: task.sample(path, texts[:n], s, seed=seed)  # noqa: E731
        if e.memory_probe:
            (gen[path], mib), cpu, wall = _timed(lambda: peak_rss_mib(sample))
            res[f"peak_mib_sample_{path}"] = mib
        else:
            gen[path], cpu, wall = _timed(sample)
        res[f"sample_cpu_s_per_batch_{path}"], res[f"sample_wall_s_per_batch_{path}"] = cpu, wall
        res[f"sample_cpu_s_per_image_batched_{path}"] = cpu / n
        k = min(e.latency_samples, n)
        _, cpu1, wall1 = _timed(lambda: [task.sample(path, [t], s, seed=seed) for t in texts[:k]])
        res[f"sample_cpu_s_per_image_{path}"], res[f"sample_wall_s_per_image_{path}"] = cpu1 / k, wall1 / k
        res[f"class_match_{path}"] = judge(task).class_match(gen[path], y[:n])
    res["sample_batch_size"] = min(e.batch_size, n)
    tr_x, tr_y, tr_texts = task.tensors("train")
    res.update(generation_report(
        train=(tr_x, task.text_tok(tr_texts), tr_y), test=(x, task.text_tok(texts), y), generated=gen,
        prompts=(task.text_tok(texts[:n]), y[:n]), vocab_size=task.text_tok.vocab_size,
        cache_dir=task.run.path / "eval_nets", seed=seed,
        feature_cfg=FeatureNetConfig(steps=e.feature_net_steps, seed=seed),
        score_cfg=ScoreEncoderConfig(steps=e.score_encoder_steps, seed=seed)))
    if e.memory_probe:
        res.update(train_memory(task))
    for path in PATHS:
        h = task.history[path]
        res[f"loss_history_steps_{path}"] = len(h)  # < train.steps: a resume lost the earlier losses
        if h:
            res[f"final_loss_{path}"] = final_loss(h)
            res[f"loss_spikes_{path}"] = count_spikes(h, e.spike_window, e.spike_ratio)
    if e.edit_samples:
        res.update(edit_probe(task))
    return res


def train_memory(task: ArVsDiffusionTask) -> dict[str, float]:
    """Peak RSS (MiB) of one forward + backward of each generator's loss on a training batch."""
    m, lc = task.model, task.lcfg
    b = task.recipe.train.batch_size
    x = task.tensors("train")[0][:b]  # (B, C, H, W) in [0, 1]
    text, pad = task.ids(task.tensors("train")[2][:b])
    codes = m.encode(x)
    out = {}
    with torch.enable_grad():
        m.train()
        m.tokenizer.eval()
        for path, fn in (("ar", lambda: m.ar_loss(text, pad, codes).backward()),
                         ("diffusion", lambda: m.diffusion_loss(text, pad, x, lc.p_uncond).backward())):
            m.zero_grad(set_to_none=True)
            out[f"peak_mib_train_step_{path}"] = peak_rss_mib(fn)[1]
        m.zero_grad(set_to_none=True)
        m.eval()
    return out


def edit_regions(task: ArVsDiffusionTask) -> tuple[Tensor, Tensor]:
    """The edited region as a token mask (N,) and a pixel mask (1, 1, H, W), both True = edited."""
    lo, hi = task.eval_cfg.edit_rows
    c, h, w = task.model.image_shape
    gh, gw = task.model.token_grid
    cell = h // gh
    if not (0 <= lo < hi <= h and lo % cell == 0 and hi % cell == 0):
        raise ValueError(f"eval.edit_rows={[lo, hi]}: expected 0 <= lo < hi <= {h}, multiples of the "
                         f"token cell ({cell} pixels)")
    rows = torch.arange(gh)[:, None].expand(gh, gw)  # (gh, gw)
    tok = ((rows >= lo // cell) & (rows < hi // cell)).flatten()  # (N,)
    pix = torch.zeros(1, 1, h, w, dtype=torch.bool)
    pix[..., lo:hi, :] = True
    return tok, pix


def edit_probe(task: ArVsDiffusionTask) -> dict[str, float]:
    """Edit the region of ``edit_samples`` test images towards a caption of another class."""
    e, m, seed = task.eval_cfg, task.model, task.recipe.run.seed
    x, y, texts = task.tensors("test")
    k = min(e.edit_samples, len(x))
    g = torch.Generator().manual_seed(seed)
    new_y = (y[:k] + torch.randint(1, 10, (k,), generator=g)) % len(task.data.classnames)  # (k,) != y
    pool = {c: [t for t, l in zip(texts, y.tolist()) if l == c] for c in range(len(task.data.classnames))}
    new_texts = [pool[c][i % len(pool[c])] for i, c in enumerate(new_y.tolist())]
    text, pad = task.ids(new_texts)
    tok_mask, pix = edit_regions(task)
    out = pix.expand(k, 1, *pix.shape[2:])  # (k, 1, H, W)
    jd, s, src = judge(task), getattr(task, "chosen", e.sampler), x[:k]
    res = {"edit_samples": float(k), "edit_class_match_source": jd.class_match(src, new_y)}
    codes = m.encode(src)  # (k, N)
    base = m.decode(codes)  # the AR path's own canvas before the edit
    (ed, cpu_ar, _) = _timed(lambda: m.decode(ar_edit_region(m.ar, text, pad, codes, tok_mask, s.ar_temperature,
                                                              e.edit_sweeps, g)))
    cond, cpad = m.condition(text, pad, task.ema["text"])
    (inp, cpu_df, _) = _timed(lambda: (repaint_ddim(task.ema["diffusion"], src * 2 - 1, ~pix, cond, cpad,
                                                    s.ddim_steps, s.guidance, s.guidance_interval,
                                                    generator=g) + 1) / 2)
    for path, img, ref, cpu in (("ar", ed, base, cpu_ar), ("diffusion", inp.clamp(0, 1), src, cpu_df)):
        res[f"edit_class_match_{path}"] = jd.class_match(img, new_y)
        res[f"edit_outside_change_{path}"] = float((img - ref).abs()[~out].mean())
        res[f"edit_outside_change_vs_real_{path}"] = float((img - src).abs()[~out].mean())
        res[f"edit_inside_change_{path}"] = float((img - ref).abs()[out].mean())
        res[f"edit_cpu_s_per_image_{path}"] = cpu / k
    return res
