"""Fusion ablation (chapter 5.5): early vs late vs gated cross-attention vs MoME on one task.

The task is built from the data at hand: "does this image and this caption agree?" Each training
image keeps its own caption with probability 1/2, otherwise it gets a caption of another class
(drawn from the source's caption list); held-out pairs are fixed by the seed. Every variant in
``model.variants`` (``fusion/agreement.py``) is trained in the same run on the same batches with
the same learning-rate schedule (on raw image patches, or on the tokens of a frozen pre-trained
image tower, ``model.image_encoder``, trained first and cached as for the captioner): ``step``
runs forward and backward for each variant in turn, clips that variant's gradients on their own
(``model.grad_clip``; keep ``train.grad_clip: null``) and times it, so the optimizer step is
equivalent to separate runs. Results: a table of held-out accuracy, parameter count and mean
forward+backward time per step for each variant.
"""

from __future__ import annotations

import random
import time
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from modalab import registry
from modalab.config import EvalBase, Recipe
from modalab.data.sample import Batch, Sample, collate
from modalab.tasks.base import Prerequisite
from modalab.tasks.caption import class_mentions, encoder_dir, encoder_prerequisites, load_image_tower
from modalab.experiment.rundir import RunDir
from modalab.fusion.agreement import AgreementModel
from modalab.models.fusion_ablation import AblationModelConfig
from modalab.models.captioner import VitTokens
from modalab.registry import register
from modalab.text.tokenizer import WordTokenizer


class PairDataset(Dataset):
    """Wraps a labelled image-caption dataset: half of the items get another class's caption.

    ``fixed=True`` decides match / other class / caption by ``(seed, index)`` (held-out split);
    otherwise every access draws anew. A sample's label becomes 1 (agree) or 0.
    """

    def __init__(self, base: Dataset, texts_by_class: dict[int, list[str]], seed: int, fixed: bool) -> None:
        self.base, self.texts, self.seed, self.fixed = base, texts_by_class, seed, fixed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Sample:
        s = self.base[i]
        rng = random.Random(self.seed * 1_000_003 + i) if self.fixed else random
        if rng.random() < 0.5:
            return Sample(id=s.id, media=s.media, text=s.text, label=1)
        other = rng.choice([c for c in self.texts if c != s.label])
        return Sample(id=s.id, media=s.media, text=rng.choice(self.texts[other]), label=0)


@register("prerequisites", "fusion_ablation")
def fusion_prerequisites(recipe: Recipe) -> list[Prerequisite]:
    """The digits CLIP image tower when model.image_encoder is set without a checkpoint."""
    return encoder_prerequisites(recipe.model.image_encoder,  # type: ignore[attr-defined]
                                 "model.image_encoder.checkpoint", recipe)


class FusionAblationTask:
    """Trains every fusion variant on image-caption agreement; reports accuracy, params, step time."""

    WARMUP = 5  # steps left out of the timing

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe, self.run = recipe, run
        self.cfg: AblationModelConfig = recipe.model  # type: ignore[assignment]
        data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        names = data.classnames or []
        by_class: dict[int, list[str]] = {}
        for t in data.texts:
            m = class_mentions(t, names)
            if len(m) == 1:
                by_class.setdefault(m.pop(), []).append(t)
        if len(by_class) < 2:
            raise ValueError(f"task fusion_ablation: source '{recipe.data.source}' needs captions of >= 2 classes")
        self.train_set = PairDataset(data.train, by_class, recipe.run.seed, fixed=False)
        self.test_set = PairDataset(data.test, by_class, recipe.run.seed, fixed=True)
        self.tokenizer = WordTokenizer.build(data.texts, self.cfg.context_length)
        self.encoder, self.encoder_dir, width = None, None, None
        if self.cfg.image_encoder is not None:  # shared, frozen, outside the trained models
            enc = self.cfg.image_encoder
            self.encoder_dir = encoder_dir(enc, "model.image_encoder.checkpoint")
            vit = load_image_tower(self.encoder_dir, data.image_size, data.channels).eval().requires_grad_(False)
            self.encoder = VitTokens(vit)
            width = self.encoder.width
            torch.manual_seed(recipe.run.seed)  # same state whether the encoder was cached or trained
        self.model = registry.build("model", self.cfg.name, self.cfg, image_size=data.image_size,
                                    channels=data.channels, vocab_size=self.tokenizer.vocab_size,
                                    image_token_dim=width)
        self.objective = registry.build("loss", recipe.loss.name, recipe.loss)
        self.times: dict[str, list[float]] = {k: [] for k in self.model}
        self.num_steps = 0

    def collate(self, samples: list) -> Batch:
        return collate(samples, self.tokenizer)

    def train_loader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.recipe.train.batch_size, shuffle=True, drop_last=True,
                          collate_fn=self.collate, num_workers=self.recipe.data.num_workers)

    @torch.no_grad()
    def image_input(self, images: Tensor) -> Tensor:
        """Raw images, or the frozen encoder's tokens (B, 1 + N, W) computed once for all variants."""
        return images if self.encoder is None else self.encoder(images)

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """Forward + backward of each variant (gradients land in ``.grad``); returns a leaf
        carrying the summed loss so the engine's own backward adds nothing."""
        logs, total = {}, 0.0
        images = self.image_input(batch.images)
        for kind, model in self.model.items():
            t0 = time.perf_counter()
            loss = self.objective(model(images, batch.tokens), batch.labels)
            loss.backward()
            if self.cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
            if self.num_steps >= self.WARMUP:
                self.times[kind].append(time.perf_counter() - t0)
            logs[f"loss/{kind}"] = float(loss.detach())
            total += logs[f"loss/{kind}"]
        self.num_steps += 1
        return torch.tensor(total, requires_grad=True), logs

    def after_step(self, step: int) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def evaluate(self, final: bool = True) -> dict[str, Any]:
        self.model.eval()
        loader = DataLoader(self.test_set, batch_size=self.recipe.eval.batch_size, collate_fn=self.collate)
        correct = {k: 0 for k in self.model}
        n = 0
        for b in loader:
            images = self.image_input(b.images)
            for kind, model in self.model.items():
                correct[kind] += int(((model(images, b.tokens) > 0).long() == b.labels).sum())
            n += len(b)
        self.model.train()
        res: dict[str, Any] = {f"accuracy/{k}": c / n for k, c in correct.items()}
        if final:
            table = [self.row(k, res[f"accuracy/{k}"]) for k in self.model]
            res["table"] = table
            res.update({f"params/{r['fusion']}": r["params"] for r in table})
            res.update({f"step_ms/{r['fusion']}": r["step_ms"] for r in table})
            res["chance_accuracy"] = sum(int(s.label) for s in self.test_set) / len(self.test_set)
            self.run.write_artifact("fusion_table", table)
        return res

    def row(self, kind: str, acc: float) -> dict[str, Any]:
        m: AgreementModel = self.model[kind]  # type: ignore[assignment]
        t = self.times[kind]
        return {"fusion": kind, "accuracy": acc, "params": sum(p.numel() for p in m.parameters()),
                "step_ms": 1000 * sum(t) / len(t) if t else None}

    def counts(self) -> dict[str, Any]:
        return {"num_train": len(self.train_set), "num_test": len(self.test_set),
                "num_params": sum(p.numel() for p in self.model.parameters()),
                "image_encoder_run": None if self.encoder_dir is None else str(self.encoder_dir)}

    def state(self) -> dict[str, Any]:
        # the step times travel with the checkpoint: a resumed run's step_ms covers every step
        return {"tokenizer": self.tokenizer.to_dict(), "num_steps": self.num_steps,
                "times": {k: list(v) for k, v in self.times.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.num_steps = int(state.get("num_steps", 0))
        for k, v in state.get("times", {}).items():
            if k not in self.times:
                raise ValueError(f"task fusion_ablation: the checkpoint times fusion '{k}', which this "
                                 f"recipe does not train ({', '.join(self.times)})")
            self.times[k] = [float(x) for x in v]

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}


class AblationEval(EvalBase):
    pass


@register("task", "fusion_ablation", schema=AblationEval)
def build_fusion_ablation_task(recipe: Recipe, run: RunDir) -> FusionAblationTask:
    """Early vs late vs gated cross-attention vs MoME on image-caption agreement."""
    return FusionAblationTask(recipe, run)
