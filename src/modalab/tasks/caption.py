"""The captioning task: image encoder -> connector -> language decoder, trained in stages.

It reads top to bottom:

1. data: a registered image source with captions (digits: "a handwritten seven", ...);
2. encoder: ``model.encoder.checkpoint`` (a two_tower run directory). When the recipe leaves it
   unset, ``caption_prerequisites`` declares the contrastive run that trains a digits CLIP image
   tower; ``modalab run`` (experiment/prerequisites.py) runs it first, cached under
   ``model.encoder.cache_dir`` (default ``<run.out_dir>/cache``), and sets the key, so the recipe
   runs standalone with one command. The task itself never runs another recipe;
3. decoder: a small causal LM, first trained on the captions alone (the "pretrained LLM" of the
   chapter at toy scale, also cached), then wrapped by ``models/captioner.py``;
4. stages: ``train.stages`` (the runner's) says for how many steps which parameter patterns learn
   and at which per-pattern learning rates ("connector only", then "connector + decoder +
   encoder at a low LR"); the stage index and each module's effective learning rate (0 while
   frozen) are logged to metrics.jsonl next to the runner's stage events;
5. evaluation: greedy (or beam) captions of the held-out images; ``caption_digit_accuracy`` is
   the share whose caption names the right class (its class name or its index as a numeral) and
   no other class.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import DataLoader

from modalab import registry
from modalab.config import ConfigError, EvalBase, Recipe
from modalab.data.dataset import epoch_loader
from modalab.data.sample import Batch, collate
from modalab.experiment.rundir import RunDir
from modalab.models.captioner import CaptionerConfig, DecoderConfig, EncoderConfig, VitTokens
from modalab.registry import register
from modalab.tasks.base import Prerequisite
from modalab.tasks.caption_pretrained import pretrained_decoder, pretrained_image_encoder
from modalab.text.decoder import TextDecoder
from modalab.text.tokenizer import BOS, EOS, PAD, WordTokenizer, tokenizer_from_dict, words
from modalab.train.engine import LoopConfig, fit
from modalab.train.optim import lr_multiplier
from modalab.train.stages import stage_index


class CaptionEval(EvalBase):
    beam_size: int = Field(1, gt=0, description="1 = greedy decoding")
    length_penalty: float = 0.0
    num_examples: int = Field(12, ge=0, description="captions written to results.json")


def class_mentions(text: str, classnames: list[str]) -> set[int]:
    """Classes a caption names, by class name or by index written as a numeral."""
    found = set()
    for w in words(text):
        if w in classnames:
            found.add(classnames.index(w))
        elif w.isdigit() and int(w) < len(classnames):
            found.add(int(w))
    return found


def matches(patterns: list[str], name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


# pre-trained parts ------------------------------------------------------------------------
def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def encoder_recipe(enc: EncoderConfig, recipe: Recipe) -> dict[str, Any]:
    """The contrastive recipe that trains the image tower on the captioner's own data and split."""
    return {
        "task": "contrastive",
        "data": recipe.data.model_dump(mode="json"),
        "model": {"name": "two_tower", "embed_dim": enc.embed_dim,
                  "vision": enc.vision.model_dump(mode="json"), "text": enc.text.model_dump(mode="json")},
        "loss": {"name": "info_nce"},
        "optim": {"lr": enc.pretrain_lr, "weight_decay": 0.05, "warmup_steps": min(30, enc.pretrain_steps // 10)},
        "train": {"steps": enc.pretrain_steps, "batch_size": enc.pretrain_batch_size, "log_every": 10},
        "run": {"name": "encoder", "seed": recipe.run.seed},
    }


def encoder_cache(enc: EncoderConfig, recipe: Recipe) -> Path:
    return Path(enc.cache_dir or Path(recipe.run.out_dir) / "cache")


def encoder_prerequisites(enc: EncoderConfig | None, key: str, recipe: Recipe) -> list[Prerequisite]:
    """The contrastive run that trains the image tower, unless ``key`` already names one."""
    if enc is None or enc.checkpoint is not None or getattr(enc, "pretrained", None):
        return []
    return [Prerequisite(key, encoder_recipe(enc, recipe), encoder_cache(enc, recipe), "clip")]


@register("prerequisites", "caption")
def caption_prerequisites(recipe: Recipe) -> list[Prerequisite]:
    """The digits CLIP image tower (a contrastive run) when model.encoder.checkpoint is unset."""
    return encoder_prerequisites(recipe.model.encoder, "model.encoder.checkpoint", recipe)  # type: ignore[attr-defined]


def encoder_dir(enc: EncoderConfig, key: str) -> Path:
    """Run directory of the image encoder named by the recipe key ``key`` (``enc.checkpoint``)."""
    if enc.checkpoint is None:
        raise ConfigError(
            f"{key} is not set: give the run directory of a two_tower run "
            f"(e.g. {key}=runs/clip_digits-YYYYMMDD-HHMMSS); `modalab run` trains one first and "
            f"sets it (registry kind 'prerequisites', experiment/prerequisites.py)"
        )
    path = Path(enc.checkpoint)
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(
            f"{key}={enc.checkpoint!r}: no config.yaml there; give the run "
            "directory of a two_tower run (e.g. runs/clip_digits-...)"
        )
    return path


def load_image_tower(run_dir: Path, image_size: int, channels: int) -> nn.Module:
    """The ViT of a two_tower run's latest checkpoint (safetensors), patch dropout off."""
    from safetensors.torch import load_file

    from modalab.config import load

    cfg = load(run_dir / "config.yaml")
    if cfg.model.name != "two_tower":
        raise ValueError(f"{run_dir}/config.yaml: model.name is {cfg.model.name!r}, expected 'two_tower'")
    got = (getattr(cfg.data, "image_size", None), getattr(cfg.data, "channels", None))
    if got != (image_size, channels):
        raise ValueError(
            f"{run_dir}: the encoder was trained on (image_size, channels)={got} but the captioner's "
            f"data gives {(image_size, channels)}; set data.image_size / data.channels to match"
        )
    ckpts = sorted(run_dir.glob("checkpoints/step_*/model.safetensors"))
    if not ckpts:
        raise FileNotFoundError(f"{run_dir}: no checkpoints/step_*/model.safetensors")
    state_file = ckpts[-1].parent / "trainer_state.json"
    vocab = tokenizer_from_dict(json.loads(state_file.read_text())["tokenizer"]).vocab_size
    tower = registry.build("model", "two_tower", cfg.model, image_size=image_size, in_channels=channels,
                           vocab_size=vocab)
    tower.load_state_dict(load_file(str(ckpts[-1])))
    vit = tower.image_encoder
    vit.patch_dropout = None
    return vit


def pretrain_language_model(
    decoder: TextDecoder, tokenizer: WordTokenizer, texts: list[str], d: DecoderConfig, seed: int,
    cache: Path, run: RunDir,
) -> dict[str, Any]:
    """Train ``decoder`` as a language model of ``texts`` (cached by configuration)."""
    from safetensors.torch import load_file, save_file

    key = _key({"decoder": d.model_dump(mode="json"), "vocab": tokenizer.vocab, "texts": texts, "seed": seed})
    path = cache / f"lm-{key}.safetensors"
    if path.is_file():
        decoder.load_state_dict(load_file(str(path)))
        run.log({"event": "decoder_lm", "source": "cache", "path": str(path)})
        return {"path": str(path)}
    final = lm_pretraining_fit(decoder, tokenizer(texts), d, seed)
    run.log({"event": "decoder_lm", "source": "training", "steps": d.pretrain_steps, "loss": final})
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    return {"path": str(path), "final_loss": final}


def lm_pretraining_fit(decoder: TextDecoder, tokens: Tensor, d: DecoderConfig, seed: int) -> float:
    """``d.pretrain_steps`` AdamW steps (constant LR, no clipping) of next-token loss on rows of
    ``tokens`` (N, L) drawn with a seeded generator, through ``train/engine.fit``; returns the
    last step's loss."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([{"params": list(decoder.parameters()), "lr": d.pretrain_lr,
                              "base_lr": d.pretrain_lr}], weight_decay=0.01)

    def batches():
        while True:
            idx = torch.randint(len(tokens), (d.pretrain_batch_size,), generator=g)
            yield tokens[idx, :-1], tokens[idx, 1:]  # (B, L-1) inputs, targets

    last: list[float] = []

    def step(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
        inp, tgt = batch
        logits = decoder(inp, attention_mask=inp != PAD)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=PAD)
        last[:] = [float(loss.detach())]
        return loss, {}

    loop = LoopConfig(steps=d.pretrain_steps, schedule="constant", grad_clip=None,
                      log_every=max(d.pretrain_steps, 1), progress=False)
    fit(decoder, batches(), step, opt, loop, log=lambda rec: None)
    return last[0] if last else float("nan")


class CaptionTask:
    """Encoder -> connector -> decoder captioning with staged training."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe, self.run = recipe, run
        self.eval_cfg: CaptionEval = recipe.eval  # type: ignore[assignment]
        cfg: CaptionerConfig = recipe.model  # type: ignore[assignment]
        self.cfg = cfg
        # data
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        if not self.data.classnames:
            raise ValueError(f"task caption: data source '{recipe.data.source}' has no class names to score")
        d = cfg.decoder
        if d.pretrained:  # a causal LM folder brings its own tokenizer (tasks/caption_pretrained.py)
            decoder, self.tokenizer = pretrained_decoder(d.pretrained, d.context_length)
        else:
            self.tokenizer = WordTokenizer.build(self.data.texts, d.context_length)
        # encoder: a pretrained tower (hf:DIR), or a contrastive run given, cached, or trained now
        cache = encoder_cache(cfg.encoder, recipe)
        self.encoder_dir: Path | None = None
        if cfg.encoder.pretrained:
            encoder = pretrained_image_encoder(cfg.encoder.pretrained)
        else:
            self.encoder_dir = encoder_dir(cfg.encoder, "model.encoder.checkpoint")
            encoder = VitTokens(load_image_tower(self.encoder_dir, self.data.image_size, self.data.channels))
        torch.manual_seed(recipe.run.seed)  # same state whether the encoder was cached or trained
        # decoder: a language model of the captions first (cached), then the captioner around it
        if not d.pretrained:
            decoder = TextDecoder(self.tokenizer.vocab_size, d.dim, d.depth, d.heads, d.max_len, d.mlp_ratio,
                                  d.dropout)
            if d.pretrain_steps:
                self.lm_info = pretrain_language_model(
                    decoder, self.tokenizer, self.data.texts, d, recipe.run.seed, cache, run
                )
        self.model = registry.build(
            "model", cfg.name, cfg, encoder=encoder, encoder_dim=encoder.width,
            vocab_size=self.tokenizer.vocab_size, decoder=decoder,
        )
        self.objective = registry.build("loss", recipe.loss.name, recipe.loss)
        self._stage_summary()

    # stages -------------------------------------------------------------------------------
    def _stage_summary(self) -> None:
        """Trainable parameter counts per ``train.stages`` entry (the runner switches stages)."""
        self.stages = list(self.recipe.train.stages)
        named = dict(self.model.named_parameters())
        if not self.stages:
            self.learnable = {n for n, p in named.items() if p.requires_grad}
            self.stage_params = {"all": sum(named[n].numel() for n in self.learnable)}
            return
        self.stage_params, self.learnable = {}, set()
        for i, s in enumerate(self.stages):
            names = {n for n in named if matches(s.trainable, n)}
            self.stage_params[s.name or f"stage{i}"] = sum(named[n].numel() for n in names)
            self.learnable |= names

    def module_lrs(self, step: int) -> dict[str, float]:
        """Effective learning rate of each top-level module at ``step`` (0 while it is frozen),
        resolved as the runner does: the stage's ``lr`` patterns, then ``optim.param_groups``."""
        o = self.recipe.optim
        mult = lr_multiplier(step, self.recipe.train.steps, o.warmup_steps, o.schedule, o.min_lr_ratio)
        rules = [(p, lr) for p, lr in self.stages[stage_index(self.stages, step)].lr.items()] if self.stages else []
        rules += [(g.pattern, g.lr) for g in o.param_groups]
        out = {}
        for module in ("encoder", "connector", "decoder"):
            live = [n for n, p in self.model.named_parameters() if n.startswith(module + ".") and p.requires_grad]
            lr = 0.0
            if live:
                rule = next((r for pat, r in rules if fnmatch.fnmatchcase(live[0], pat)), None)
                lr = (rule if rule is not None else o.lr) * mult
            out[f"lr/{module}"] = lr
        return out

    # data ---------------------------------------------------------------------------------
    def collate(self, samples: list) -> Batch:
        return collate(samples, self.tokenizer)

    def train_loader(self) -> DataLoader:
        return epoch_loader(
            self.data.train, self.recipe.train.batch_size, self.collate, self.recipe.data.num_workers
        )

    # training -----------------------------------------------------------------------------
    def loss(self, batch: Batch) -> Tensor:
        tokens = batch.tokens  # (B, L): <bos> words <eos> <pad>...
        inp, tgt = tokens[:, :-1], tokens[:, 1:]  # (B, L-1) each
        return self.objective(self.model(batch.images, inp, inp != PAD), tgt)

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        return self.loss(batch), {}

    def after_step(self, step: int) -> dict[str, float]:
        stage = {"stage": float(stage_index(self.stages, step))} if self.stages else {}
        return {**stage, **self.module_lrs(step)}

    # evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        dataset = self.data.val if split == "val" else self.data.test  # val: eval_every and tuning
        final = final and split == "test"  # artifacts of record come from the test split only
        self.model.eval()
        loader = DataLoader(dataset, batch_size=self.eval_cfg.batch_size, collate_fn=self.collate)
        names = list(self.data.classnames or [])
        hits: list[int] = []  # 1 when the caption names the item's digit and no other, split order
        nll, examples = 0.0, []
        for b in loader:
            nll += float(self.loss(b)) * len(b)
            prompt = torch.full((len(b), 1), BOS, dtype=torch.long)
            out = self.model.generate(
                b.images, prompt, self.cfg.decoder.context_length - 1, eos_id=EOS, pad_id=PAD,
                beam_size=self.eval_cfg.beam_size, length_penalty=self.eval_cfg.length_penalty,
            )
            for row, y in zip(out.tolist(), b.labels.tolist()):
                text = self.tokenizer.decode([t for t in row if t != EOS])
                hits.append(int(class_mentions(text, names) == {y}))
                if len(examples) < self.eval_cfg.num_examples:
                    examples.append({"label": names[y], "caption": text})
        self.model.train()
        total = len(hits)
        res: dict[str, Any] = {"caption_digit_accuracy": sum(hits) / total, "caption_loss": nll / total}
        if final:
            res["caption_examples"] = examples
            self.run.write_artifact("captions", examples)
            # per test item, for compare's two-level bootstrap (seeds, then items, paired across arms)
            self.run.write_artifact("per_item", {"split": "test", "ids": list(range(total)), "metrics": {
                "caption_digit_accuracy": hits, "test_caption_digit_accuracy": hits}})
        return res

    def counts(self) -> dict[str, Any]:
        enc_res = None if self.encoder_dir is None else self.encoder_dir / "results.json"
        zs = None
        if enc_res is not None and enc_res.is_file():
            zs = json.loads(enc_res.read_text()).get("zeroshot_top1")
        return {
            "num_train": len(self.data.train),
            "num_val": _n(self.data.val), "num_test": len(self.data.test),
            "num_params": sum(p.numel() for p in self.model.parameters()),
            "trainable_params": sum(p.numel() for n, p in self.model.named_parameters() if n in self.learnable),
            "trainable_params_by_stage": self.stage_params,
            "encoder_run": str(self.encoder_dir or self.cfg.encoder.pretrained),
            "decoder_pretrained": self.cfg.decoder.pretrained,
            "encoder_zeroshot_top1": zs,
        }

    def state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_dict()}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}


@register("task", "caption", schema=CaptionEval)
def build_caption(recipe: Recipe, run: RunDir) -> CaptionTask:
    """Caption images: encoder -> connector -> decoder, staged; scores the class named in each caption."""
    return CaptionTask(recipe, run)


def _n(dataset: object) -> int:
    """Items in an optional split (0 when the source has none)."""
    return 0 if dataset is None else len(dataset)  # type: ignore[arg-type]
