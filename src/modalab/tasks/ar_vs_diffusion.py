"""AR vs diffusion text-to-image, one budget, one data stream (chapter 5.2.2-5.2.3), as the runner sees it.

It reads top to bottom:
1. data: an image source with captions (``digits``).
2. model ``gen_pair`` (``models/gen_pair.py``): a VQ tokenizer pretrained here on the training split
   and frozen, an AR transformer over its codes, and a diffusion decoder with its own text encoder
   of the same shape (both generators read the same caption ids).
3. objective ``ar_vs_diffusion``: every step, on EVERY image of the batch, the AR next-code loss and
   the diffusion epsilon loss (condition dropout ``p_uncond`` for guidance); the two parameter sets
   are disjoint, so the sum trains each on its own loss (set ``train.grad_clip: null`` to keep the
   clipping from coupling them). An EMA of the diffusion branch (``loss.ema_decay``) samples.
4. evaluation (``tasks/ar_vs_diffusion_eval.py``): on val, both class-matches and FIDs (the
   plateau); at the end, before the test, the ``eval.sweep_*`` sampler settings are scored on val and
   one per path is picked by a fixed rule (``artifacts/val_sweep.json``); then on test once, per
   path: FID / KID beside the real-vs-real floor, CLIP-S, class-match, sampling seconds per image
   (batch of one) and per batch, peak memory of a training step and of sampling, the loss curve's
   final value and spikes, and region editing (AR: Gibbs resampling of a region's codes; diffusion:
   RePaint inpainting) judged against a new caption.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from modalab import registry
from modalab.config import EvalBase, NamedBase, Recipe, Section
from modalab.data.dataset import epoch_loader
from modalab.data.sample import Batch, collate
from modalab.data.transforms import MEAN, STD
from modalab.experiment.rundir import RunDir
from modalab.models.gen_pair import GenPair, GenPairConfig, ema_update
from modalab.models.unified_builder import train_tokenizer_branch
from modalab.registry import register
from modalab.text.tokenizer import PAD, WordTokenizer


class Sampler(Section):
    """One setting of both samplers."""

    ar_temperature: float = Field(1.0, ge=0, description="0 = greedy codes")
    ar_top_k: int | None = Field(None, gt=0)
    ddim_steps: int = Field(50, gt=0)
    guidance: float = Field(1.0, ge=0, description="classifier-free guidance weight (1 = none)")
    guidance_interval: tuple[int, int] | None = Field(None, description="[lo, hi] timesteps; null = all")

    @field_validator("guidance_interval")
    @classmethod
    def _ordered(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not 0 <= v[0] <= v[1]:
            raise ValueError(f"guidance_interval={list(v)}: expected [lo, hi] with 0 <= lo <= hi")
        return v


class Guidance(Section):
    guidance: float = Field(ge=0)
    guidance_interval: tuple[int, int] | None = None


class ArVsDiffusionEval(EvalBase):
    sampler: Sampler = Field(default_factory=Sampler, description="the settings scored (chosen on val)")
    sweep_ar_temperature: list[float] = Field(default_factory=list, description="AR temperatures scored on val "
                                              "before the test; the rule ``select_min_class_match`` picks one")
    sweep_guidance: list[Guidance] = Field(default_factory=list, description="diffusion guidance settings "
                                           "scored on val before the test, picked by the same rule")
    select_min_class_match: float = Field(0.9, ge=0, le=1, description="rule, per path: the lowest val FID "
                                          "among settings with val class-match >= this, else the highest "
                                          "class-match")
    select_confidence: float = Field(0.0, ge=0, lt=1, description="> 0: a setting clears the bar only when "
                                     "the one-sided Wilson lower bound of its val class-match at this "
                                     "confidence does (eval/sampler_select.py); 0: the point estimate")
    generate_samples: int = Field(200, gt=0, description="held-out captions used as prompts")
    latency_samples: int = Field(8, gt=0, description="prompts sampled one at a time (s per image, batch 1)")
    val_fid: bool = Field(True, description="validation evaluations also give FID against the val images")
    edit_samples: int = Field(100, ge=0, description="test images edited (0: no controllability probe)")
    edit_sweeps: int = Field(2, ge=0, description="Gibbs sweeps of AR region editing")
    edit_rows: tuple[int, int] = Field((8, 16), description="[lo, hi) pixel rows of the edited region "
                                                            "(aligned to the token grid)")
    memory_probe: bool = Field(True, description="peak RSS of one training step and of sampling")
    spike_window: int = Field(20, gt=0)
    spike_ratio: float = Field(1.5, gt=1)
    feature_net_steps: int = Field(300, gt=0)
    score_encoder_steps: int = Field(300, gt=0)


class ArVsDiffusionLoss(NamedBase):
    diffusion_weight: float = Field(1.0, gt=0)
    p_uncond: float = Field(0.1, ge=0, lt=1, description="condition dropout (classifier-free guidance)")
    ema_decay: float = Field(0.995, ge=0, lt=1, description="EMA of the diffusion branch; 0 = last weights")


@register("loss", "ar_vs_diffusion", schema=ArVsDiffusionLoss)
def build_ar_vs_diffusion_loss(cfg: ArVsDiffusionLoss) -> ArVsDiffusionLoss:
    """AR next-code loss + diffusion epsilon loss on every image (the settings are the objective)."""
    return cfg


class ArVsDiffusionTask:
    """Train an AR and a diffusion text-to-image generator on the same batches; compare them."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe, self.run = recipe, run
        self.eval_cfg: ArVsDiffusionEval = recipe.eval  # type: ignore[assignment]
        self.lcfg: ArVsDiffusionLoss = registry.build("loss", recipe.loss.name, recipe.loss)
        if recipe.loss.name != "ar_vs_diffusion" or recipe.model.name != "gen_pair":
            raise ValueError(f"task ar_vs_diffusion needs loss.name=ar_vs_diffusion and model.name=gen_pair; "
                             f"got {recipe.loss.name} / {recipe.model.name}")
        self.cfg: GenPairConfig = recipe.model  # type: ignore[assignment]
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        if not self.data.texts or not self.data.classnames:
            raise ValueError(f"task ar_vs_diffusion needs captions and class names; data.source="
                             f"{recipe.data.source} gives none")
        size = self.data.image_size
        if not isinstance(size, int):
            raise ValueError(f"task ar_vs_diffusion needs square images of one size; got image_size={size}")
        self.text_tok = WordTokenizer.build(self.data.texts, self.cfg.text_context)
        self.model: GenPair = registry.build("model", "gen_pair", self.cfg, text_vocab=self.text_tok.vocab_size,
                                             image_size=size, channels=self.data.channels)
        self.pretrain = train_tokenizer_branch(self.model.tokenizer, self.tensors("train")[0],
                                               self.cfg.tokenizer, seed=recipe.run.seed)
        self.model.tokenizer.requires_grad_(False).eval()
        self.ema = copy.deepcopy(nn.ModuleDict({"text": self.model.diffusion_text,
                                                "diffusion": self.model.diffusion})).requires_grad_(False).eval()
        self.history: dict[str, list[float]] = {"ar": [], "diffusion": []}
        self.global_step = 0

    # data ---------------------------------------------------------------------------------
    def tensors(self, split: str) -> tuple[Tensor, Tensor, list[str]]:
        """A split as images (N, C, H, W) in [0, 1], labels (N,) and captions."""
        if getattr(self, "_cache", None) is None:
            self._cache: dict[str, tuple[Tensor, Tensor, list[str]]] = {}
        if split not in self._cache:
            ds = getattr(self.data, split)
            if ds is None:
                raise ValueError(f"task ar_vs_diffusion: data has no '{split}' split; set data.val_fraction > 0")
            items = [ds[i] for i in range(len(ds))]
            self._cache[split] = (torch.stack([(s.media * STD + MEAN).clamp(0, 1) for s in items]),
                                  torch.tensor([s.label for s in items]), [s.text for s in items])
        return self._cache[split]

    def ids(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Caption ids (B, T) and their padding mask (B, T)."""
        t = self.text_tok(texts)
        return t, t == PAD

    def collate(self, samples: list) -> Batch:
        return collate(samples, self.text_tok)

    def train_loader(self):
        return epoch_loader(self.data.train, self.recipe.train.batch_size, self.collate,
                            self.recipe.data.num_workers)

    # training -----------------------------------------------------------------------------
    def losses(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(AR loss, diffusion loss) of one batch, both on every image."""
        m = self.model
        x = (batch.images * STD + MEAN).clamp(0, 1)  # (B, C, H, W) in [0, 1]
        m.tokenizer.eval()
        codes = m.encode(x)  # (B, N)
        text, pad = batch.tokens, batch.tokens == PAD  # (B, T)
        return m.ar_loss(text, pad, codes), m.diffusion_loss(text, pad, x, self.lcfg.p_uncond)

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        la, ld = self.losses(batch)
        self.history["ar"].append(float(la.detach()))
        self.history["diffusion"].append(float(ld.detach()))
        return la + self.lcfg.diffusion_weight * ld, {"loss/ar": self.history["ar"][-1],
                                                      "loss/diffusion": self.history["diffusion"][-1]}

    def after_step(self, step: int) -> dict[str, float]:
        if step + 1 <= self.global_step:  # the runner replays the last step's hook on resume: the
            return {}  # restored EMA already holds that step's update
        self.global_step = step + 1
        live = nn.ModuleDict({"text": self.model.diffusion_text, "diffusion": self.model.diffusion})
        ema_update(self.ema, live, self.lcfg.ema_decay)
        return {}

    # sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, path: str, texts: list[str], s: Sampler, seed: int) -> Tensor:
        """Images (P, C, H, W) in [0, 1] for the prompts through ``path`` ('ar' | 'diffusion')."""
        m, g, out, bs = self.model, torch.Generator().manual_seed(seed), [], self.eval_cfg.batch_size
        for i in range(0, len(texts), bs):
            text, pad = self.ids(texts[i : i + bs])
            if path == "ar":
                codes = m.ar.generate_codes(text, pad, temperature=s.ar_temperature, top_k=s.ar_top_k, generator=g)
                out.append(m.decode(codes))
            elif path == "diffusion":
                cond, cpad = m.condition(text, pad, self.ema["text"])
                x = self.ema["diffusion"].ddim_sample((len(text), *m.image_shape), cond, cpad, steps=s.ddim_steps,
                                                      guidance=s.guidance, guidance_interval=s.guidance_interval,
                                                      generator=g)
                out.append(((x + 1) / 2).clamp(0, 1))
            else:
                raise ValueError(f"task ar_vs_diffusion: path='{path}'; expected 'ar' or 'diffusion'")
        return torch.cat(out)

    # evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        """Val: class-match and FID of both paths (+ the sweep at the last step); test: the table."""
        from modalab.tasks import ar_vs_diffusion_eval as ev

        if split not in ("test", "val"):
            raise ValueError(f"task ar_vs_diffusion: split='{split}'; expected 'test' or 'val'")
        self.model.eval()
        self.ema.eval()  # no dropout in the EMA text encoder when sampling
        try:
            if split == "val":
                return ev.score_split(self, "val", self.eval_cfg.sampler, fid=self.eval_cfg.val_fid)
            return ev.test_table(self) if final else ev.score_split(self, "test", self.eval_cfg.sampler, fid=False)
        finally:
            self.model.train()
            self.model.tokenizer.eval()

    def counts(self) -> dict[str, Any]:
        def n_params(mod: nn.Module) -> int:
            return sum(p.numel() for p in mod.parameters())

        m = self.model
        return {"num_train": len(self.data.train), "num_val": 0 if self.data.val is None else len(self.data.val),
                "num_test": len(self.data.test), "tokenizer_pretrain": self.pretrain,
                "params": {"tokenizer": n_params(m.tokenizer), "ar": n_params(m.ar),
                           "diffusion": n_params(m.diffusion) + n_params(m.diffusion_text)}}

    def state(self) -> dict[str, Any]:
        # the per-step losses travel with the checkpoint: a resumed run's final loss and spike
        # count cover every step, not only those after the resume
        return {"global_step": self.global_step, "text_tokenizer": self.text_tok.to_dict(),
                "loss_history": {k: list(v) for k, v in self.history.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.global_step = int(state.get("global_step", 0))
        h = state.get("loss_history")
        if h is None:  # a checkpoint from before the history was saved: say so in the results
            self.history = {"ar": [], "diffusion": []}
            return
        if set(h) != set(self.history) or len({len(v) for v in h.values()}) != 1:
            raise ValueError(f"task ar_vs_diffusion: the checkpoint's loss_history has "
                             f"{ {k: len(v) for k, v in h.items()} } entries; expected 'ar' and "
                             f"'diffusion', one entry per micro-batch each")
        self.history = {k: [float(x) for x in v] for k, v in h.items()}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"ema": self.ema}


@register("task", "ar_vs_diffusion", schema=ArVsDiffusionEval)
def build_ar_vs_diffusion_task(recipe: Recipe, run: RunDir) -> ArVsDiffusionTask:
    """AR over VQ codes vs a diffusion decoder: same captions, same batches, same steps."""
    return ArVsDiffusionTask(recipe, run)
