"""Pretraining a ViT on the digits' training split and writing it out as a ``ViTModel`` folder.

The "pretrained vision encoder" of the chapter's post-training recipes, made on this machine
(``recipes/pretrain/vit_digits.yaml``): supervised classification of the training split only
(val/test are never trained on), a ViT in transformers' ViT layout (class token, patch bias, no
pre-norm, exact GELU) behind the same :class:`PixelAdapter` a loaded checkpoint gets. At the end the
tower (without the classification head) is exported to ``<run>/hf`` with its
``preprocessor_config.json`` and, when ``model.export_to`` is set, published there too, so
``model.vision.pretrained: hf:DIR`` / ``model.encoder.pretrained: hf:DIR`` load it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import DataLoader

from modalab import registry
from modalab.config import EvalBase, NamedBase, Recipe
from modalab.data.dataset import epoch_loader
from modalab.data.sample import Batch, collate
from modalab.experiment.rundir import RunDir
from modalab.models.pretrained.export_vit import export_vit_hf
from modalab.models.pretrained.preprocess import PixelAdapter
from modalab.registry import register
from modalab.vision.clip_vit import PretrainedViT
from modalab.tasks.base import split_counts

MARKER = ".modalab-export.json"  # a published folder modalab may replace


def publish(src: Path, dest: str | None, run_dir: Path) -> str | None:
    """Copy the exported folder ``src`` to ``dest`` (replacing only an earlier modalab export)."""
    if not dest:
        return None
    out = Path(dest)
    if out.exists() and not (out / MARKER).is_file():
        raise FileExistsError(f"model.export_to={dest!r} exists and is not a modalab export; choose a new folder")
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    (tmp / MARKER).write_text(json.dumps({"run": str(run_dir)}), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return str(out)


class ClassifyEval(EvalBase):
    pass


class CrossEntropyConfig(NamedBase):
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class ClassCrossEntropy(nn.Module):
    """logits (B, K), labels (B,) -> mean cross-entropy."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)


@register("loss", "cross_entropy", schema=CrossEntropyConfig)
def build_cross_entropy(cfg: CrossEntropyConfig) -> ClassCrossEntropy:
    """Class cross-entropy (image classification pretraining)."""
    return ClassCrossEntropy(cfg.label_smoothing)


class VitClassifierConfig(NamedBase):
    patch_size: int = Field(4, gt=0)
    width: int = Field(96, gt=0)
    depth: int = Field(3, gt=0)
    heads: int = Field(4, gt=0)
    mlp_ratio: int = Field(4, gt=0)
    export_to: str | None = Field(None, description="also publish the exported ViTModel folder here")


class VitClassifier(nn.Module):
    """images (B, C, S, S) in [-1, 1] -> class logits (B, K): ``PixelAdapter(ViT)`` -> class token -> linear."""

    def __init__(self, vit: PixelAdapter, num_classes: int) -> None:
        super().__init__()
        self.vit = vit
        self.head = nn.Linear(vit.tower.width, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.vit(images))  # (B, K)


@register("model", "vit_classifier", schema=VitClassifierConfig)
def build_vit_classifier(cfg: VitClassifierConfig, *, image_size: int, num_classes: int) -> VitClassifier:
    """A ViT in transformers' ViT layout (exportable as ViTModel) with a linear class head."""
    tower = PretrainedViT(image_size=image_size, patch_size=cfg.patch_size, in_channels=3, width=cfg.width,
                          depth=cfg.depth, heads=cfg.heads, mlp_hidden=cfg.width * cfg.mlp_ratio, act=F.gelu,
                          norm_eps=1e-12, class_token=True, patch_bias=True, pre_norm=False)
    return VitClassifier(PixelAdapter(tower, image_size, [0.5] * 3, [0.5] * 3), num_classes)


class ImageClassifyTask:
    """Supervised image classification on a labelled source; exports the ViT at the end."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe, self.run = recipe, run
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        if not self.data.classnames:
            raise ValueError(f"task image_classify: data source '{recipe.data.source}' has no class names")
        self.model = registry.build("model", recipe.model.name, recipe.model, image_size=self.data.image_size,
                                    num_classes=len(self.data.classnames))
        self.objective = registry.build("loss", recipe.loss.name, recipe.loss)
        self.exported: dict[str, Any] = {}

    def train_loader(self) -> DataLoader:
        return epoch_loader(self.data.train, self.recipe.train.batch_size, collate, self.recipe.data.num_workers)

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        return self.objective(self.model(batch.images), batch.labels), {}

    def after_step(self, step: int) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        dataset = self.data.val if split == "val" else self.data.test
        self.model.eval()
        correct, nll, total = 0, 0.0, 0
        for b in DataLoader(dataset, batch_size=self.recipe.eval.batch_size, collate_fn=collate):
            logits = self.model(b.images)
            nll += float(F.cross_entropy(logits, b.labels, reduction="sum"))
            correct += int((logits.argmax(-1) == b.labels).sum())
            total += len(b)
        self.model.train()
        if final and split == "test":
            self.export()
        return {"top1": correct / total, "loss": nll / total}

    def export(self) -> None:
        """``<run>/hf``: the ViT (no head) as a ViTModel folder; published to model.export_to."""
        path = getattr(self.run, "path", None)
        if path is None or self.exported:
            return
        adapter = self.model.vit
        out = export_vit_hf(adapter.tower, Path(path) / "hf", adapter.mean.flatten().tolist(),
                            adapter.std.flatten().tolist())
        self.exported = {"export_hf": str(out),
                         "export_to": publish(out, self.recipe.model.export_to,  # type: ignore[attr-defined]
                                              Path(path))}

    def counts(self) -> dict[str, Any]:
        return {**split_counts(self.data), "num_params": sum(p.numel() for p in self.model.parameters()),
                **self.exported}

    def state(self) -> dict[str, Any]:
        return {}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}


@register("task", "image_classify", schema=ClassifyEval)
def build_image_classify(recipe: Recipe, run: RunDir) -> ImageClassifyTask:
    """Supervised image classification (train split); the ViT is exported as a ViTModel folder."""
    return ImageClassifyTask(recipe, run)
