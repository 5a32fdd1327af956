"""The contrastive alignment task (CLIP / SigLIP style) as the runner sees it.

It reads top to bottom: build data, build the tokenizer, build the model, build the objective;
``step`` computes the loss of one batch; ``evaluate`` embeds a held-out split (``val`` during
training and for tuning, ``test`` once at the end) and reports zero-shot accuracy and retrieval in
both directions; the final test evaluation also saves what the report draws and the per-item
results (``artifacts/per_item.json``) that paired statistics across runs resample.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from modalab import registry
from modalab.align.queue import MomentumEncoder, sample_ids
from modalab.config import ConfigError, EvalBase, Recipe
from modalab.constants import TAU_RANGE
from modalab.data.dataset import epoch_loader
from modalab.data.region_batch import collate_regions
from modalab.data.sample import Batch, collate
from modalab.eval.examples import retrieval_examples
from modalab.eval.monitors import AlignmentMonitor
from modalab.eval.retrieval import pad_cat, retrieval_hits, retrieval_metrics
from modalab.eval.zeroshot import class_embeddings, zeroshot_accuracy, zeroshot_hits
from modalab.tasks.scene_eval import example_grid, negative_tokens, scene_results
from modalab.tasks.scene_regions import embed_with_regions, region_loss_inputs, source_has_regions, wants_regions
from modalab.experiment.rundir import RunDir
from modalab.models.pretrained.recipe_build import recipe_tokenizer
from modalab.registry import register
from modalab.text.tokenizer import build_tokenizer
from modalab.vision.masking import unmasking_ratio



class ContrastiveEval(EvalBase):
    match: Literal["auto", "label", "pair"] = Field(
        "auto", description="what counts as a correct retrieval: label (same label), pair (own pair or an "
        "identical caption); auto = label when labels exist"
    )
    prompts: list[str] = Field(
        default_factory=lambda: ["{label}", "a photo of a {label}", "an image of a {label}"],
        min_length=1,
    )
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
    heatmap_size: int = Field(40, ge=2, description="test items drawn in the similarity heatmap")
    probe: list[Literal["composition"]] = Field(default_factory=list, description="extra probes (digit_scenes)")
    examples: int = Field(0, ge=0, description="held-out images drawn with their captions in the report")


class ContrastiveTask:
    """Image-text contrastive alignment on a registered data source."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe = recipe
        self.run = run
        self.eval_cfg: ContrastiveEval = recipe.eval  # type: ignore[assignment]
        # data
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        prompts = [p.format(label=c) for c in (self.data.classnames or []) for p in self.eval_cfg.prompts]
        tcfg = recipe.model.text  # type: ignore[attr-defined]
        self.tokenizer = recipe_tokenizer(recipe.model) or build_tokenizer(
            tcfg.tokenizer, [*self.data.texts, *prompts], tcfg.context_length
        )  # a pretrained text tower brings its own tokenizer
        # model and objective
        self.model = registry.build(
            "model",
            recipe.model.name,
            recipe.model,
            image_size=self.data.image_size,
            in_channels=self.data.channels,
            vocab_size=self.tokenizer.vocab_size,
        )
        self.objective = registry.build("loss", recipe.loss.name, recipe.loss)
        params = inspect.signature(self.objective.forward).parameters
        self.needs_tokens = "text_tokens" in params or getattr(self.objective, "needs_tokens", False)
        self.wants_ids = "ids" in params
        self.key_model = self._momentum_encoder(getattr(recipe.model, "momentum", None))
        self.ema_steps = 0  # optimizer steps the key encoder has followed (kept with checkpoints)
        self.wants_negatives = "neg_text_emb" in params  # hard-negative captions (NegCLIP)
        # region-phrase contrast: multi_granularity's regional level, on sources with boxes
        self.wants_regions = wants_regions(self.objective) and source_has_regions(self.data.train)
        if self.wants_regions and recipe.train.accum_steps > 1:
            raise ConfigError("loss.regional_weight > 0 on boxes does not split into micro-batches: set "
                              "train.accum_steps: 1 (or loss.regional_weight: 0)")
        self.monitor = AlignmentMonitor(max_logit_scale=recipe.model.max_logit_scale)  # type: ignore[attr-defined]
        self.fixed_scale = getattr(recipe.loss, "temperature", None)
        self._warned: set[str] = set()
        self.unmask_steps = getattr(getattr(recipe.model, "vision", None), "unmask_steps", 0)
        if self.unmask_steps:  # FLIP unmasking tuning: the last steps without patch dropout
            self.flip = getattr(self.model.image_encoder, "patch_dropout", None)
            if self.flip is None:
                raise ValueError("model.vision.unmask_steps > 0 needs model.vision.patch_dropout > 0 (FLIP)")
            self.flip_ratio = self.flip.ratio
            unmasking_ratio(0, recipe.train.steps, self.flip_ratio, self.unmask_steps)  # checks the range

    def _momentum_encoder(self, momentum: float | None) -> MomentumEncoder | None:
        """The EMA key encoder of ``model.momentum`` (MoCo), for objectives that take its keys."""
        wants = getattr(self.objective, "wants_keys", False)
        if momentum is None:
            if wants:
                raise ConfigError(
                    f"loss {self.recipe.loss.name} needs a momentum key encoder: set model.momentum "
                    f"(e.g. 0.995); queued embeddings of an online encoder drift away from its "
                    f"positives and the towers collapse"
                )
            return None
        if not wants:
            raise ConfigError(
                f"model.momentum={momentum} is set but loss {self.recipe.loss.name} does not use "
                f"momentum keys (queue_info_nce does); remove model.momentum"
            )
        return MomentumEncoder(self.model, momentum)

    # data ---------------------------------------------------------------------------------
    def collate(self, samples: list) -> Batch:
        batch = collate(samples, self.tokenizer)
        if self.wants_negatives:
            batch.negatives = negative_tokens(samples, self.tokenizer)
        return batch

    def collate_train(self, samples: list) -> Batch:
        batch = self.collate(samples)
        if self.wants_regions:
            batch.regions = collate_regions(samples, self.tokenizer)
        return batch

    def train_loader(self) -> DataLoader:
        if isinstance(self.data.train, IterableDataset):  # streamed shards split themselves
            return DataLoader(self.data.train, batch_size=self.recipe.train.batch_size, drop_last=True,
                              collate_fn=self.collate_train, num_workers=self.recipe.data.num_workers)
        return epoch_loader(
            self.data.train, self.recipe.train.batch_size, self.collate_train, self.recipe.data.num_workers
        )

    # training -----------------------------------------------------------------------------
    def logit_scale(self) -> Tensor:
        if self.fixed_scale is not None:
            return torch.tensor(1.0 / self.fixed_scale, device=self.model.logit_scale.device)
        return self.model.logit_scale.exp()

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        return self.loss_from_embeddings(self.embed_batch(batch), batch)

    def embed_batch(self, batch: Batch) -> dict[str, Tensor]:
        """(B, E) embeddings of both towers (and token embeddings for token-level losses).

        With :meth:`loss_from_embeddings` this is the split GradCache needs (train.accum_mode=exact).
        """
        if self.wants_regions and batch.regions is not None:
            emb = embed_with_regions(self.model, batch, self.needs_tokens)
        else:
            out = self.model(batch.images, batch.tokens, return_tokens=self.needs_tokens)
            keys = ["image_emb", "text_emb"]
            if self.needs_tokens:
                keys += ["image_tokens", "text_tokens", "text_token_mask"]
            emb = {k: out[k] for k in keys}
        if self.key_model is not None:  # MoCo keys of the same batch, without gradient
            k_out = self.key_model(batch.images, batch.tokens)
            emb["image_keys"], emb["text_keys"] = k_out["image_emb"], k_out["text_emb"]
        if batch.negatives is not None:
            b, k, length = batch.negatives.shape
            neg = self.model.encode_text(batch.negatives.reshape(b * k, length))  # (B*K, E)
            emb["neg_text_emb"] = neg.reshape(b, k, -1)  # (B, K, E)
        return emb

    def loss_from_embeddings(self, emb: dict[str, Tensor], batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """The objective on embeddings of the whole batch (as returned by :meth:`embed_batch`)."""
        extra: dict[str, Any] = {}
        logs: dict[str, float] = {}
        if self.needs_tokens:
            extra = {k: emb[k] for k in ("image_tokens", "text_tokens", "text_token_mask")}
        if "region_emb" in emb:
            regional, logs = region_loss_inputs(emb)
            extra.update(regional)
        if self.wants_ids:
            extra["ids"] = sample_ids(batch.ids)
        if "image_keys" in emb:
            extra["image_keys"], extra["text_keys"] = emb["image_keys"], emb["text_keys"]
        if self.wants_negatives:
            extra["neg_text_emb"] = emb["neg_text_emb"]
        loss = self.objective(
            emb["image_emb"],
            emb["text_emb"],
            logit_scale=self.logit_scale(),
            logit_bias=self.model.logit_bias,
            labels=batch.labels,
            **extra,
        )
        return loss, logs

    def after_step(self, step: int) -> dict[str, float]:
        self.model.clamp_()
        if self.key_model is not None and step + 1 > self.ema_steps:  # once per optimizer step: the
            self.key_model.update(self.model)  # runner calls after_step again when it resumes
            self.ema_steps = step + 1
        if hasattr(self.objective, "set_progress"):  # curriculum samplers read the progress
            self.objective.set_progress((step + 1) / self.recipe.train.steps)
        scale = float(self.logit_scale().detach())
        logs = {"logit_scale": scale, "tau": 1.0 / scale}
        if self.unmask_steps:  # log the ratio of this step, set the next step's
            logs["patch_dropout"] = self.flip.ratio
            total = self.recipe.train.steps
            self.flip.ratio = unmasking_ratio(step + 1, total, self.flip_ratio, self.unmask_steps)
        if self.model.logit_bias is not None:
            logs["logit_bias"] = float(self.model.logit_bias.detach())
        self._check_temperature(step, scale)
        return logs

    def _check_temperature(self, step: int, scale: float) -> None:
        tau = 1.0 / scale
        if self.fixed_scale is None and self.model.at_clamp and "clamp" not in self._warned:
            self._warned.add("clamp")
            self.run.log({"step": step + 1, "warning": f"logit scale reached its clamp ({scale:.1f})"})
        if not TAU_RANGE[0] <= tau <= TAU_RANGE[1] and "tau" not in self._warned:
            self._warned.add("tau")
            self.run.log(
                {"step": step + 1, "warning": f"tau={tau:.4f} is outside the chapter's range {TAU_RANGE}"}
            )

    # evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, dataset: Any) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """(N, E) image and text embeddings of ``dataset``, its (N,) labels (None without) and the
        captions' (N, L) token rows (``pair`` retrieval counts identical captions as one answer)."""
        self.model.eval()
        loader = DataLoader(dataset, batch_size=self.eval_cfg.batch_size, collate_fn=self.collate)
        imgs, txts, labels, tokens = [], [], [], []
        dev = self.model.logit_scale.device
        for b in loader:
            imgs.append(self.model.encode_image(b.images.to(dev)).float().cpu())
            txts.append(self.model.encode_text(b.tokens.to(dev)).float().cpu())
            tokens.append(b.tokens.cpu())
            if b.labels is not None:
                labels.append(b.labels)
        lab = torch.cat(labels) if labels and len(labels) == len(imgs) else None
        return torch.cat(imgs), torch.cat(txts), lab, pad_cat(tokens)

    @torch.no_grad()
    def evaluate(self, final: bool = True, split: Literal["val", "test"] = "test") -> dict[str, Any]:
        dataset = self.data.val if split == "val" else self.data.test
        if dataset is None:
            raise ValueError(f"data source '{self.recipe.data.source}' has no {split} split "
                             f"(data.val_fraction: {self.recipe.data.val_fraction})")
        final = final and split == "test"  # artifacts and warnings of record come from test only
        image_emb, text_emb, labels, tokens = self.embed(dataset)
        mode = self.eval_cfg.match
        if mode == "auto":
            mode = "label" if labels is not None else "pair"
        res: dict[str, Any] = {"eval_match": mode}
        if self.data.classnames and labels is not None:
            cls = self._class_embeddings()
            res.update(zeroshot_accuracy(image_emb, cls, labels, ks=(1, min(5, len(self.data.classnames)))))
            if len(self.data.classnames) < 5:
                res["zeroshot_top5"] = 1.0
        res.update(retrieval_metrics(image_emb, text_emb, labels, mode, self.eval_cfg.ks, texts=tokens))
        if final:
            per_item = {k: v.int().tolist()
                        for k, v in retrieval_hits(image_emb, text_emb, labels, mode, texts=tokens).items()}
            if self.data.classnames and labels is not None:
                per_item.update(self._zeroshot_hits(image_emb, labels))
            self._save_per_item(dataset, per_item)
        monitor, warnings = self.monitor(
            image_emb, text_emb, labels, logit_scale=float(self.logit_scale().detach())
        )
        res.update(monitor)
        for w in warnings:
            self.run.log({"warning": w, "final": final})
        if self.eval_cfg.probe or "novel_test" in self.data.extras:
            res.update(scene_results(self, final, split))
        if final:
            res["monitor_warnings"] = warnings
            self._save_artifacts(image_emb, text_emb, labels)
            if self.eval_cfg.examples:
                self.run.write_artifact("examples", example_grid(self.data.test, self.eval_cfg.examples))
        return res

    def _zeroshot_hits(self, image_emb: Tensor, labels: Tensor) -> dict[str, list[int]]:
        cls = self._class_embeddings()
        k5 = min(5, cls.shape[0])
        return {"zeroshot_top1": zeroshot_hits(image_emb, cls, labels, 1).int().tolist(),
                "zeroshot_top5": zeroshot_hits(image_emb, cls, labels, k5).int().tolist()}

    def _save_per_item(self, dataset: Any, metrics: dict[str, list[int]]) -> None:
        """Per-item hits (0/1) on the test split, in dataset order, with the items' ids."""
        ids = [dataset[i].id for i in range(len(dataset))] if len(dataset) <= 100_000 else None
        self.run.write_artifact("per_item", {"split": "test", "ids": ids, "metrics": metrics})

    def _class_embeddings(self) -> Tensor:
        """(C, E) prompt-ensemble class embeddings on CPU."""
        return class_embeddings(
            lambda t: self.model.encode_text(self.tokenizer(t).to(self.model.logit_scale.device)).cpu(),
            self.data.classnames, self.eval_cfg.prompts,
        )

    def _save_artifacts(self, image_emb: Tensor, text_emb: Tensor, labels: Tensor | None) -> None:
        idx = heatmap_subset(labels, image_emb.shape[0], self.eval_cfg.heatmap_size)
        sim = image_emb[idx] @ text_emb[idx].T  # (n, n)
        self.run.write_artifact(
            "similarity_heatmap",
            {
                "sim": sim.tolist(),
                "labels": labels[idx].tolist() if labels is not None else None,
                "classnames": self.data.classnames,
            },
        )
        full = image_emb @ text_emb.T  # (N, N)
        eye = torch.eye(full.shape[0], dtype=torch.bool)
        self.run.write_artifact(
            "similarity_distribution",
            {"positive": full[eye].tolist(), "negative": full[~eye][:: max(1, full.numel() // 20000)].tolist()},
        )
        test = self.data.test
        test = list(test) if isinstance(test, IterableDataset) else test  # streamed shards
        self.run.write_artifact("retrieval_examples", retrieval_examples(
            image_emb, text_emb, labels, _Column(test, "media"), _Column(test, "text")))

    def counts(self) -> dict[str, Any]:
        noise = self.data.extras.get("noise")
        if noise is not None:  # which training pairs were corrupted (data.noise)
            self.run.write_artifact("noise", noise)
        return {
            **({"noise_swapped": len(noise["swapped"]), "noise_dropped": len(noise["dropped"])} if noise else {}),
            "num_train": len(self.data.train),
            "num_val": len(self.data.val) if self.data.val is not None else 0,
            "num_test": len(self.data.test),
            "num_skipped": self.data.num_skipped,
            "skipped": self.data.all_skipped,
            "num_params": sum(p.numel() for p in self.model.parameters()),
            "tau_final": 1.0 / float(self.logit_scale().detach()),
            "logit_scale_final": float(self.logit_scale().detach()),
            "logit_scale_at_clamp": bool(self.fixed_scale is None and self.model.at_clamp),
        }

    def state(self) -> dict[str, Any]:
        """JSON state kept with checkpoints (the tokenizer's vocabulary, the monitor's reference)."""
        out = {"tokenizer": self.tokenizer.to_dict(), "monitor": self.monitor.state_dict()}
        if self.unmask_steps:  # the ratio of the next step (0 once unmasking tuning has begun)
            out["patch_dropout"] = self.flip.ratio
        if self.key_model is not None:
            out["ema_steps"] = self.ema_steps
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved (on resume; the tokenizer is rebuilt identically)."""
        if "monitor" in state:
            self.monitor.load_state_dict(state["monitor"])
        if self.unmask_steps and "patch_dropout" in state:
            self.flip.ratio = float(state["patch_dropout"])
        if self.key_model is not None:
            self.ema_steps = int(state.get("ema_steps", 0))

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        """Modules with state outside the model (negative queues, the momentum key encoder), saved
        with checkpoints and restored on resume."""
        out: dict[str, torch.nn.Module] = {}
        if getattr(self.objective, "stateful", False) or self.objective.state_dict():
            out["objective"] = self.objective
        if self.key_model is not None:
            out["momentum"] = self.key_model
        return out


@register("task", "contrastive", schema=ContrastiveEval)
def build_contrastive(recipe: Recipe, run: RunDir) -> ContrastiveTask:
    """Contrastive alignment of images and captions; zero-shot and retrieval evaluation."""
    return ContrastiveTask(recipe, run)


class _Column:
    """``column[i]`` = ``dataset[i].<attr>``: test items read one by one, only where needed."""

    def __init__(self, dataset: Any, attr: str) -> None:
        self.dataset, self.attr = dataset, attr

    def __getitem__(self, i: int) -> Any:
        return getattr(self.dataset[i], self.attr)


def heatmap_subset(labels: Tensor | None, n_items: int, size: int) -> Tensor:
    """Indices of at most ``size`` items for the similarity heatmap: without labels, evenly spaced;
    with labels, the first items of every class in turn, sorted by label, so that each class shows
    as a block."""
    if labels is None:
        return torch.arange(n_items)[:: max(1, n_items // size)][:size]
    classes = labels.unique()
    per = max(1, size // len(classes))
    idx = torch.cat([(labels == c).nonzero().flatten()[:per] for c in classes])
    return idx[torch.argsort(labels[idx], stable=True)]
