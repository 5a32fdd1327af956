"""One model that understands and generates digits (chapter 5.2.2-5.2.3), as the runner sees it.

It reads top to bottom:
1. data: an image source with captions (``digits``: "a handwritten seven", "the number 7, ...").
2. model ``unified`` (``models/unified.py``): an image tokenizer (VQ / FSQ), a shared causal
   transformer over text ids and image codes, and a small conditional diffusion decoder. The
   tokenizer is the first pretrained branch: it is trained here on the training split only
   (``model.tokenizer.pretrain_steps``) and then frozen.
3. objective ``unified``: for every item of a step, a task mixture (``loss.mix``, the chapter's
   understand : generate = 3 : 1 first, balanced later; ``data/mixing.py``) picks "understand"
   (image codes -> caption, next-token loss on the text) or "generate" (caption -> image codes,
   next-token loss on the codes, plus the diffusion loss on the pixels conditioned on the shared
   transformer's hidden states). Realised shares are logged as ``mix/...`` in metrics.jsonl.
4. stages (``train.stages``, the chapter's three): branches (transformer and diffusion decoder
   learn side by side; the diffusion condition is detached), interface (diffusion frozen; its loss
   now trains the transformer: ``loss.interface_from_stage``), joint (everything).
5. evaluation: ``understand_accuracy`` (greedy answer names the right digit) on the held-out
   images; the held-out captions as prompts for both generation paths, each image judged by an
   RBF-SVM fitted on the real training images (``eval/judge.py``): ``generate_class_match_ar`` and
   ``generate_class_match_diffusion``, with the judge's own held-out accuracy and the sampling time
   per image of each path; a PNG grid of generations in ``artifacts/``. Distribution scores
   (``eval/generation_report.py``): ``generate_fid_<path>`` beside ``fid_real_floor``, KID,
   precision / recall, and ``generate_clip_score_<path>`` (Hessel CLIP-S, w = 2.5) / R-precision
   from an in-house feature CNN and dual encoder trained on the real training split (in-domain
   scores, not comparable to Inception-FID or CLIP-ViT numbers).
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Any

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from modalab import registry
from modalab.config import EvalBase, Recipe
from modalab.data.dataset import epoch_loader
from modalab.data.mixing import MixtureSampler
from modalab.data.sample import Batch, collate
from modalab.data.transforms import MEAN, STD
from modalab.eval.feature_net import FeatureNetConfig
from modalab.eval.generation_report import generation_report
from modalab.eval.judge import ClassJudge
from modalab.eval.score_encoder import ScoreEncoderConfig
from modalab.tasks.ar_vs_diffusion import Guidance
from modalab.tasks.caption import class_mentions
from modalab.experiment.rundir import RunDir
from modalab.models.gen_pair import ema_update
from modalab.models.unified_builder import (
    UnifiedConfig, UnifiedLossConfig, build_unified_model, save_grid, save_tensors, train_tokenizer_branch,
)
from modalab.registry import register
from modalab.text.tokenizer import EOS, PAD, WordTokenizer
from modalab.train.stages import stage_index


# task -------------------------------------------------------------------------------------
class UnifiedEval(EvalBase):
    generate_samples: int = Field(200, gt=0, description="held-out captions used as prompts")
    ar_temperature: float = Field(0.7, ge=0, description="0 = greedy codes")
    ar_top_k: int | None = Field(None, gt=0)
    ddim_steps: int = Field(50, gt=0)
    guidance: float = Field(3.0, ge=0, description="classifier-free guidance weight")
    guidance_interval: tuple[int, int] | None = Field(
        None, description="[lo, hi]: guidance only at DDIM timesteps lo <= t <= hi, the conditional "
                          "prediction alone elsewhere (Kynkaanniemi et al. 2024); null = every step")
    guidance_rescale: float = Field(0.0, ge=0, le=1, description="CFG rescale phi (Lin et al. 2024)")

    @field_validator("guidance_interval")
    @classmethod
    def _ordered(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not 0 <= v[0] <= v[1]:
            raise ValueError(f"eval.guidance_interval={list(v)}: expected [lo, hi] with 0 <= lo <= hi")
        return v
    grid_per_class: int = Field(4, ge=0, description="generated images per class in the PNG grid")
    save_generated: bool = Field(True, description="artifacts/generated.safetensors: every generated "
                                                   "image with its prompted class, for other judges")
    distribution_scores: bool = Field(True, description="FID / KID / precision-recall / CLIP score with "
                                                        "the in-house feature net and score encoder")
    feature_net_steps: int = Field(300, gt=0, description="training steps of the FID feature CNN")
    score_encoder_steps: int = Field(300, gt=0, description="training steps of the CLIP-score dual encoder")
    val_generate: bool = Field(True, description="validation evaluations also score both generation "
                                                 "paths' class-match on the validation captions")
    sweep_guidance: list[Guidance] = Field(default_factory=list, description="diffusion guidance settings "
                                           "scored on val before the test (tasks/unified_select.py); the "
                                           "test uses the one the rule picks; empty: eval.guidance as set")
    sweep_ar_temperature: list[float] = Field(default_factory=list, description="AR temperatures scored on "
                                              "val before the test, picked by the same rule; empty: "
                                              "eval.ar_temperature as set")
    select_min_class_match: float = Field(0.9, ge=0, le=1, description="rule: the lowest val FID among "
                                          "settings with val class-match >= this, else the highest")
    select_confidence: float = Field(0.0, ge=0, lt=1, description="> 0: a setting clears the bar only when "
                                     "the one-sided Wilson lower bound of its val class-match at this "
                                     "confidence does (eval/sampler_select.py); 0: the point estimate")
    select_repeats: int = Field(1, ge=1, description="samples per validation caption in the val sweep "
                                                     "(a smaller standard error for the rule)")


class UnifiedTask:
    """Understand (image -> caption) and generate (caption -> image, AR and diffusion) digits."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe, self.run = recipe, run
        self.eval_cfg: UnifiedEval = recipe.eval  # type: ignore[assignment]
        self.cfg: UnifiedConfig = recipe.model  # type: ignore[assignment]
        self.lcfg: UnifiedLossConfig = recipe.loss  # type: ignore[assignment]
        if recipe.loss.name != "unified":
            raise ValueError(f"task unified trains with loss.name=unified; got loss.name={recipe.loss.name}")
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        if not self.data.texts or not self.data.classnames:
            raise ValueError(f"task unified needs captions and class names; data.source="
                             f"{recipe.data.source} gives none")
        self.text_tok = WordTokenizer.build(self.data.texts, self.cfg.text_context)
        size, ch = self.data.image_size, self.data.channels
        if not isinstance(size, int):
            raise ValueError(f"task unified needs square images of one size; got image_size={size}")
        self.model = build_unified_model(self.cfg, text_vocab=self.text_tok.vocab_size,
                                         image_size=size, channels=ch)
        self.pretrain = train_tokenizer_branch(self.model.tokenizer, self._tensors(self.data.train)[0],
                                               self.cfg.tokenizer, seed=recipe.run.seed)
        self.model.tokenizer.requires_grad_(False).eval()
        self.sampler = MixtureSampler(registry.build("loss", "unified", recipe.loss),
                                      recipe.train.steps, seed=recipe.run.seed)
        self.stages = list(recipe.train.stages)
        self.global_step = 0
        self.ema: nn.Module | None = None  # EMA of the diffusion decoder, sampled from (loss.ema_decay)
        if self.lcfg.ema_decay is not None:
            self.ema = copy.deepcopy(self.model.diffusion).requires_grad_(False).eval()

    # data ---------------------------------------------------------------------------------
    def _tensors(self, ds) -> tuple[Tensor, Tensor, list[str]]:
        """A whole split as images (N, C, H, W) in [0, 1], labels (N,) and captions, as the split
        yields them (the training split augments when ``data.augment`` is on)."""
        items = [ds[i] for i in range(len(ds))]
        return (torch.stack([self.to_unit(s.media) for s in items]),
                torch.tensor([s.label for s in items]), [s.text for s in items])

    @staticmethod
    def to_unit(images: Tensor) -> Tensor:
        return (images * STD + MEAN).clamp(0, 1)

    def collate(self, samples: list) -> Batch:
        return collate(samples, self.text_tok)

    def train_loader(self):
        return epoch_loader(self.data.train, self.recipe.train.batch_size, self.collate,
                            self.recipe.data.num_workers)

    # training -----------------------------------------------------------------------------
    def _detach_condition(self) -> bool:
        if not self.stages:
            return False
        return stage_index(self.stages, self.global_step) < self.lcfg.interface_from_stage

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        m, x = self.model, self.to_unit(batch.images)  # (B, C, H, W) in [0, 1]
        m.tokenizer.eval()  # frozen: no EMA codebook updates
        codes = m.tokenizer.encode(x).flatten(1)  # (B, N)
        text, pad = batch.tokens, batch.tokens == PAD  # (B, T)
        names = self.sampler.choose(self.global_step, len(batch))
        und = torch.tensor([n == "understand" for n in names])
        share_u = float(und.float().mean())
        loss, logs = x.new_zeros(()), {}
        if und.any():
            feats = m.image_features(x[und]) if self.cfg.understand_input == "latents" else None
            lu = m.transformer.understand_loss(codes[und], text[und], pad[und], feats)
            loss = loss + share_u * lu
            logs["loss/understand"] = float(lu.detach())
        gen = ~und
        if gen.any():
            lg = m.transformer.generate_loss(text[gen], codes[gen], pad[gen])
            loss = loss + (1 - share_u) * lg
            logs["loss/generate_ar"] = float(lg.detach())
        if self.lcfg.diffusion_items == "all":  # every image; the transformer learns from 'generate' only
            keep = gen if not self._detach_condition() else torch.zeros_like(gen)
            loss = loss + self.lcfg.diffusion_weight * self._diffusion_loss(x, text, pad, keep, logs)
        elif gen.any():
            keep = gen[gen] if not self._detach_condition() else torch.zeros_like(gen[gen])
            ld = self._diffusion_loss(x[gen], text[gen], pad[gen], keep, logs)
            loss = loss + (1 - share_u) * self.lcfg.diffusion_weight * ld
        return loss, logs

    def _diffusion_loss(self, x: Tensor, text: Tensor, pad: Tensor, attached: Tensor,
                        logs: dict[str, float]) -> Tensor:
        """The decoder's loss on images x (b, C, H, W) in [0, 1]; rows where ``attached`` (b,) is
        False see a detached condition, so that loss trains the decoder but not the transformer."""
        m = self.model
        cond = m.transformer.text_condition(text, pad)  # (b, T + 1, D)
        cond = torch.where(attached[:, None, None], cond, cond.detach())
        cpad = m.transformer._prompt_pad(pad, cond.shape[1])
        ld = m.diffusion.loss(x * 2 - 1, cond, cpad, p_uncond=self.lcfg.p_uncond)
        logs["loss/diffusion"] = float(ld.detach())
        return ld

    def after_step(self, step: int) -> dict[str, float]:
        if self.ema is not None and step + 1 > self.global_step:  # not again when a resume replays it
            ema_update(self.ema, self.model.diffusion, self.lcfg.ema_decay)
        self.global_step = step + 1
        stage = {"stage": float(stage_index(self.stages, step))} if self.stages else {}
        return {**stage, **self.sampler.log(step)}

    # evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def understand_accuracy(self, images: Tensor, labels: Tensor) -> float:
        m, names, correct = self.model, list(self.data.classnames), 0
        for i in range(0, len(images), self.eval_cfg.batch_size):
            x = images[i : i + self.eval_cfg.batch_size]
            codes = m.tokenizer.encode(x).flatten(1)  # (b, N)
            feats = m.image_features(x) if self.cfg.understand_input == "latents" else None
            out = m.transformer.answer(codes, self.cfg.text_context, eos_id=EOS, features=feats)
            for row, y in zip(out.tolist(), labels[i : i + len(out)].tolist()):
                correct += class_mentions(self.text_tok.decode(row), names) == {y}
        return correct / len(images)

    @torch.no_grad()
    def generate(self, prompts: list[str], path: str, seed: int, **sampler: Any) -> Tensor:
        """Images (P, C, H, W) in [0, 1] for the prompts, in evaluation batches; ``sampler``
        overrides the path's eval settings (AR: temperature; diffusion: e.g. guidance)."""
        e, g, out = self.eval_cfg, torch.Generator().manual_seed(seed), []
        kw = ({**dict(temperature=e.ar_temperature, top_k=e.ar_top_k), **sampler} if path == "ar"
              else {**dict(steps=e.ddim_steps, guidance=e.guidance, guidance_interval=e.guidance_interval,
                           guidance_rescale=e.guidance_rescale), **sampler})
        for i in range(0, len(prompts), e.batch_size):
            text = self.text_tok(prompts[i : i + e.batch_size])
            with self._sampling_weights():
                out.append(self.model("generate", text=text, text_pad=text == PAD, path=path,
                                      generator=g, **kw))
        return torch.cat(out)

    @contextlib.contextmanager
    def _sampling_weights(self):
        """The diffusion decoder samples from its EMA when ``loss.ema_decay`` is set."""
        if self.ema is None:
            yield
            return
        live, self.model.diffusion = self.model.diffusion, self.ema
        try:
            yield
        finally:
            self.model.diffusion = live

    def _judge(self) -> ClassJudge:
        """The class judge, fitted once on the real training images."""
        if getattr(self, "_fitted_judge", None) is None:
            train_x, train_y, _ = self._tensors(self.data.train)
            self._fitted_judge = ClassJudge()
            self._fitted_judge.fit(train_x, train_y)
        return self._fitted_judge

    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        """Test metrics (``final``: generation, distribution scores, artifacts), or the tuning
        split's (``split='val'``: understanding and, with ``eval.val_generate``, both class-matches
        on the validation captions; no artifacts)."""
        if split not in ("test", "val"):
            raise ValueError(f"task unified: split='{split}'; expected 'test' or 'val'")
        if split == "val" and self.data.val is None:
            raise ValueError("task unified: no validation split; set data.val_fraction > 0")
        self.model.eval()
        images, labels, texts = self._tensors(self.data.val if split == "val" else self.data.test)
        res: dict[str, Any] = {"understand_accuracy": self.understand_accuracy(images, labels)}
        if split == "val":
            if self.eval_cfg.val_generate:
                n = min(self.eval_cfg.generate_samples, len(texts))
                for path in ("ar", "diffusion"):
                    gen = self.generate(texts[:n], path, seed=self.recipe.run.seed)
                    res[f"generate_class_match_{path}"] = self._judge().class_match(gen, labels[:n])
            self.model.train()
            return res
        if final:
            if self.eval_cfg.sweep_guidance or self.eval_cfg.sweep_ar_temperature:
                from modalab.tasks.unified_select import select_on_val  # val first; the test is scored once

                chosen, cleared = select_on_val(self)
                self.eval_cfg = self.eval_cfg.model_copy(update=chosen)
                res.update({f"chosen_cleared_bar_{p}": float(ok) for p, ok in cleared.items()})
                lo, hi = self.eval_cfg.guidance_interval or (-1, -1)
                res.update(chosen_guidance=self.eval_cfg.guidance, chosen_guidance_lo=lo, chosen_guidance_hi=hi,
                           chosen_ar_temperature=self.eval_cfg.ar_temperature)
            judge = self._judge()
            res["judge_test_accuracy"] = float((judge.predict(images) == labels).float().mean())
            n = min(self.eval_cfg.generate_samples, len(texts))
            kept = {"prompted_class": labels[:n].clone()}
            for path in ("ar", "diffusion"):
                t0 = time.perf_counter()
                gen = self.generate(texts[:n], path, seed=self.recipe.run.seed)
                res[f"sample_seconds_per_image_{path}"] = (time.perf_counter() - t0) / n
                res[f"generate_class_match_{path}"] = judge.class_match(gen, labels[:n])
                self._grid(path, gen, labels[:n])
                kept[f"images_{path}"] = gen.contiguous()
            res["generate_samples"] = n
            if self.eval_cfg.distribution_scores:
                res.update(self._distribution_scores(texts, labels, images, kept, n))
            if self.eval_cfg.save_generated:
                save_tensors(kept, self.run.path / "artifacts" / "generated.safetensors")
        self.model.train()
        return res

    def _distribution_scores(self, texts: list[str], labels: Tensor, images: Tensor,
                             kept: dict[str, Tensor], n: int) -> dict[str, float]:
        """FID / KID / precision-recall / CLIP score of both paths (``eval/generation_report.py``);
        the feature net and score encoder train on the real training split, cached in the run dir."""
        tr_x, tr_y, tr_texts = self._tensors(self.data.train)
        e, seed = self.eval_cfg, self.recipe.run.seed
        return generation_report(
            train=(tr_x, self.text_tok(tr_texts), tr_y), test=(images, self.text_tok(texts), labels),
            generated={p: kept[f"images_{p}"] for p in ("ar", "diffusion")},
            prompts=(self.text_tok(texts[:n]), labels[:n]), vocab_size=self.text_tok.vocab_size,
            cache_dir=self.run.path / "eval_nets", seed=seed,
            feature_cfg=FeatureNetConfig(steps=e.feature_net_steps, seed=seed),
            score_cfg=ScoreEncoderConfig(steps=e.score_encoder_steps, seed=seed))

    def _grid(self, path: str, images: Tensor, labels: Tensor) -> None:
        k = self.eval_cfg.grid_per_class
        if not k:
            return
        rows = [images[labels == c][:k] for c in range(len(self.data.classnames))]
        save_grid(rows, self.run.path / "artifacts" / f"generated_{path}.png")

    def counts(self) -> dict[str, Any]:
        def n_params(mod: nn.Module) -> int:
            return sum(p.numel() for p in mod.parameters())

        return {
            "num_train": len(self.data.train), "num_val": _n(self.data.val), "num_test": len(self.data.test),
            "num_params": n_params(self.model),
            "params": {k: n_params(getattr(self.model, k)) for k in ("tokenizer", "transformer", "diffusion")},
            "tokenizer_pretrain": self.pretrain,
            "mix_realised": self.sampler.realised(),
            "mix_realised_by_phase": {str(p): self.sampler.realised(p) for p in sorted(self.sampler.phase_counts)},
        }

    def state(self) -> dict[str, Any]:
        return {"global_step": self.global_step, "mix_counts": dict(self.sampler.counts),
                "mix_phase_counts": {str(k): dict(v) for k, v in self.sampler.phase_counts.items()},
                "text_tokenizer": self.text_tok.to_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        from collections import Counter

        self.global_step = int(state.get("global_step", 0))
        self.sampler.counts = Counter(state.get("mix_counts", {}))
        self.sampler.phase_counts = {int(k): Counter(v) for k, v in state.get("mix_phase_counts", {}).items()}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {} if self.ema is None else {"ema": self.ema}


@register("task", "unified", schema=UnifiedEval)
def build_unified_task(recipe: Recipe, run: RunDir) -> UnifiedTask:
    """Understand and generate with one model: tokenizer + shared transformer + diffusion decoder."""
    return UnifiedTask(recipe, run)


def _n(dataset: object) -> int:
    """Items in an optional split (0 when the source has none)."""
    return 0 if dataset is None else len(dataset)  # type: ignore[arg-type]
