"""Video tasks (chapter 5.4) as the runner sees them.

- ``video_actions``: action recognition on clips (frame encoder + temporal module); reports
  ``top1`` / ``top5`` and per-class accuracy on the held-out clips.
- ``video_long_tome``: the same training, then ToMe applied to the trained model at several r
  (tokens merged per layer): accuracy, clips/s and tokens left for each r.
- ``video_localization``: temporal action localisation on long videos (per-step class scores and
  start/end offsets, decoded with NMS / Soft-NMS); reports ActivityNet-style mAP at tIoU
  0.3:0.1:0.7 (``mAP@0.3`` ... ``mAP@0.7``, ``mAP_avg``).

Each reads top to bottom like ``tasks/contrastive.py``: build data, model, objective;
``step`` computes one batch's loss; ``evaluate`` runs the held-out split.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Literal, Sequence

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import DataLoader

from modalab import registry
from modalab.config import EvalBase, Recipe
from modalab.data.batches import LocBatch, collate_long
from modalab.data.sample import Batch, collate
from modalab.experiment.rundir import RunDir
from modalab.models.temporal_localizer import decode_segments, localization_targets
from modalab.registry import register
from modalab.video.localization import THUMOS_THRESHOLDS, mean_average_precision
from modalab.video.merging import ToMeEncoder, set_merge_r, tokens_after_merging

# ---------------------------------------------------------------------------------- schemas


class ActionsEval(EvalBase):
    batch_size: int = Field(64, gt=0)
    ks: list[int] = Field(default_factory=lambda: [1, 5], min_length=1)


class LongToMeEval(ActionsEval):
    rs: list[int] = Field(default_factory=lambda: [0, 8, 16, 32], min_length=1,
                          description="ToMe r (tokens merged per layer) evaluated after training")
    timing_repeats: int = Field(3, gt=0, description="timed passes over the test set (best kept)")


class LocalizationEval(EvalBase):
    batch_size: int = Field(8, gt=0)
    thresholds: list[float] = Field(default_factory=lambda: list(THUMOS_THRESHOLDS), min_length=1)
    score_threshold: float = Field(0.05, ge=0, lt=1)
    nms: Literal["hard", "linear", "gaussian"] = "gaussian"
    iou_threshold: float = Field(0.5, ge=0, le=1)
    sigma: float = Field(0.5, gt=0)
    max_segments: int = Field(100, gt=0, description="kept per video after NMS")


# ----------------------------------------------------------------------------------- losses


# ------------------------------------------------------------------------------ recognition


def _loader(dataset: Any, batch_size: int, collate_fn: Callable, train: bool, workers: int = 0) -> DataLoader:
    if train and len(dataset) < batch_size:
        raise ValueError(
            f"train.batch_size={batch_size} exceeds the {len(dataset)} training videos; "
            f"lower train.batch_size or raise the source's video count"
        )
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train,
                      collate_fn=collate_fn, num_workers=workers)


def topk_accuracy(logits: Tensor, labels: Tensor, ks: Sequence[int]) -> dict[str, float]:
    """{"top{k}": share of rows whose label is among the k highest logits}; k capped at C."""
    rank = logits.argsort(dim=1, descending=True)  # (N, C)
    hit = rank == labels[:, None]  # (N, C), one True per row
    return {f"top{k}": float(hit[:, : min(k, logits.shape[1])].any(1).float().mean()) for k in ks}


class VideoActionsTask:
    """Action recognition on a registered video source (Sample.media = (T, C, H, W))."""

    def __init__(
        self, recipe: Recipe, run: RunDir,
        extra_eval: Callable[["VideoActionsTask"], dict[str, Any]] | None = None,
    ) -> None:
        self.recipe, self.run, self.extra_eval = recipe, run, extra_eval
        self.eval_cfg: ActionsEval = recipe.eval  # type: ignore[assignment]
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        if not self.data.classnames:
            raise ValueError(f"task video_actions needs labelled clips; source "
                             f"'{recipe.data.source}' gave no class names")
        self.num_frames = int(self.data.test[0].media.shape[0])
        self.model = registry.build(
            "model", recipe.model.name, recipe.model, num_classes=len(self.data.classnames),
            image_size=self.data.image_size, channels=self.data.channels, max_frames=self.num_frames,
        )
        self.criterion = registry.build("loss", recipe.loss.name, recipe.loss)

    def train_loader(self) -> DataLoader:
        return _loader(self.data.train, self.recipe.train.batch_size, collate, True,
                       self.recipe.data.num_workers)

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        logits = self.model(batch.images)  # (B, C)
        loss = self.criterion(logits, batch.labels)
        return loss, {"train_acc": float((logits.argmax(1) == batch.labels).float().mean())}

    def after_step(self, step: int) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def predict(self, dataset: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Logits (N, C), labels (N,) and the videos (N, T, C, H, W) of ``dataset``."""
        self.model.eval()
        logits, labels, videos = [], [], []
        for b in _loader(dataset, self.eval_cfg.batch_size, collate, False):
            logits.append(self.model(b.images).float())
            labels.append(b.labels)
            videos.append(b.images)
        return torch.cat(logits), torch.cat(labels), torch.cat(videos)

    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        dataset = self.data.val if split == "val" else self.data.test  # val: eval_every and tuning
        final = final and split == "test"  # artifacts of record come from the test split only
        logits, labels, videos = self.predict(dataset)
        res: dict[str, Any] = topk_accuracy(logits, labels, self.eval_cfg.ks)
        c = len(self.data.classnames)
        confusion = torch.zeros(c, c, dtype=torch.long)  # (true, predicted)
        confusion.index_put_((labels, logits.argmax(1)), torch.ones_like(labels), accumulate=True)
        per_class = confusion.diag().float() / confusion.sum(1).clamp_min(1).float()
        if final:
            res["per_class_acc"] = dict(zip(self.data.classnames, per_class.tolist()))
            self.run.write_artifact("confusion", {"matrix": confusion.tolist(),
                                                  "classnames": self.data.classnames})
            hits = (logits.argmax(1) == labels).int().tolist()  # 0/1 per test clip, split order
            self.run.write_artifact("per_item", {"split": "test", "ids": list(range(len(hits))),
                                                 "metrics": {"top1": hits, "test_top1": hits}})
            if self.extra_eval is not None:
                self._test_videos = (videos, labels)
                res.update(self.extra_eval(self))
        return res

    def counts(self) -> dict[str, Any]:
        return {"num_train": len(self.data.train), "num_val": _n(self.data.val), "num_test": len(self.data.test),
                "num_frames": self.num_frames,
                "num_params": sum(p.numel() for p in self.model.parameters())}

    def state(self) -> dict[str, Any]:
        return {"classnames": self.data.classnames}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}


@register("task", "video_actions", schema=ActionsEval)
def build_video_actions(recipe: Recipe, run: RunDir) -> VideoActionsTask:
    """Action recognition on video clips; top-1 / top-5 and per-class accuracy."""
    return VideoActionsTask(recipe, run)


# ------------------------------------------------------------------------- ToMe at several r


@torch.no_grad()
def tome_sweep(
    model: nn.Module, videos: Tensor, labels: Tensor, rs: Sequence[int], batch_size: int,
    repeats: int = 3,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Accuracy and speed of a trained ToMe classifier with r tokens merged per layer, per r.

    videos (N, T, C, H, W) already decoded (timing covers the model only). Returns flat results
    ``tome/top1@r8`` ... and one row per r; r is restored afterwards.
    """
    temporal = getattr(model, "temporal", None)
    if not isinstance(temporal, ToMeEncoder):
        raise ValueError("task video_long_tome needs model.temporal=tome (a ToMeEncoder)")
    trained_r = temporal.blocks[0].r
    model.eval()
    length = int(torch.tensor(model.frame_encoder(videos[:1]).shape[1:3]).prod())  # T * N
    rows: list[dict[str, float]] = []
    try:
        for r in rs:
            set_merge_r(model, r)
            chunks = videos.split(batch_size)
            model(chunks[0])  # warm-up
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                logits = torch.cat([model(x).float() for x in chunks])
                best = min(best, time.perf_counter() - t0)
            rows.append({"r": r, "top1": float((logits.argmax(1) == labels).float().mean()),
                         "clips_per_s": len(videos) / best,
                         "tokens_in": length,
                         "tokens_out": tokens_after_merging(length, r, len(temporal.blocks))})
    finally:
        set_merge_r(model, trained_r)
    base = next((row for row in rows if row["r"] == 0), rows[0])["clips_per_s"]
    flat: dict[str, float] = {}
    for row in rows:
        row["speedup"] = row["clips_per_s"] / base
        for k in ("top1", "clips_per_s", "speedup", "tokens_out"):
            flat[f"tome/{k}@r{row['r']}"] = row[k]
    return flat, rows


@register("task", "video_long_tome", schema=LongToMeEval)
def build_video_long_tome(recipe: Recipe, run: RunDir) -> VideoActionsTask:
    """Recognition with a ToMe encoder, then accuracy / clips per second at several r."""

    def sweep(task: VideoActionsTask) -> dict[str, Any]:
        cfg: LongToMeEval = task.eval_cfg  # type: ignore[assignment]
        videos, labels = task._test_videos
        flat, rows = tome_sweep(task.model, videos, labels, cfg.rs, cfg.batch_size, cfg.timing_repeats)
        task.run.write_artifact("tome_sweep", {"rows": rows})
        return flat

    return VideoActionsTask(recipe, run, extra_eval=sweep)


# ----------------------------------------------------------------------------- localisation


class VideoLocalizationTask:
    """Temporal action localisation on long videos with labelled segments."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe, self.run = recipe, run
        self.eval_cfg: LocalizationEval = recipe.eval  # type: ignore[assignment]
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        probe = self.data.test[0]
        if "segments" not in probe.meta:
            raise ValueError(f"task video_localization needs samples with meta['segments']; "
                             f"source '{recipe.data.source}' gives none (use moving_digits_long)")
        self.num_classes = len(self.data.classnames or [])
        self.num_steps = int(probe.media.shape[0])
        self.model = registry.build(
            "model", recipe.model.name, recipe.model, num_classes=self.num_classes,
            image_size=self.data.image_size, channels=self.data.channels, max_frames=self.num_steps,
        )
        self.criterion = registry.build("loss", recipe.loss.name, recipe.loss)

    def train_loader(self) -> DataLoader:
        return _loader(self.data.train, self.recipe.train.batch_size, collate_long, True,
                       self.recipe.data.num_workers)

    def targets(self, batch: LocBatch, num_steps: int) -> tuple[Tensor, Tensor]:
        """(B, T, C) class targets and (B, T, 2) offsets in steps from each video's segments."""
        cls, off = zip(*[
            localization_targets([(g["start"] / sps, g["end"] / sps, g["label"]) for g in segs],
                                 num_steps, self.num_classes)
            for segs, sps in zip(batch.segments, batch.seconds_per_step)
        ])
        return torch.stack(cls), torch.stack(off)

    def step(self, batch: LocBatch) -> tuple[Tensor, dict[str, float]]:
        cls_logits, offsets = self.model(batch.videos)  # (B, T, C), (B, T, 2)
        cls_t, off_t = self.targets(batch, cls_logits.shape[1])
        return self.criterion(cls_logits, offsets, cls_t, off_t)

    def after_step(self, step: int) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        dataset = self.data.val if split == "val" else self.data.test  # val: eval_every and tuning
        final = final and split == "test"  # artifacts of record come from the test split only
        self.model.eval()
        e = self.eval_cfg
        preds: list[dict] = []
        gts: list[dict] = []
        for b in _loader(dataset, e.batch_size, collate_long, False):
            cls_logits, offsets = self.model(b.videos)
            for i, vid in enumerate(b.ids):
                preds += decode_segments(
                    cls_logits[i], offsets[i], b.seconds_per_step[i], vid, e.score_threshold,
                    e.nms, e.iou_threshold, e.sigma, e.max_segments,
                )
                gts += [{"video": vid, "label": g["label"], "start": g["start"], "end": g["end"]}
                        for g in b.segments[i]]
        res: dict[str, Any] = mean_average_precision(preds, gts, e.thresholds)
        res["num_gt_segments"] = len(gts)
        res["num_predictions"] = len(preds)
        if final:
            first = gts[0]["video"]
            self.run.write_artifact("segments_first_video", {
                "video": first,
                "ground_truth": [g for g in gts if g["video"] == first],
                "predictions": [p for p in preds if p["video"] == first][:20],
            })
        return res

    def counts(self) -> dict[str, Any]:
        return {"num_train": len(self.data.train), "num_val": _n(self.data.val), "num_test": len(self.data.test),
                "num_steps": self.num_steps,
                "num_params": sum(p.numel() for p in self.model.parameters())}

    def state(self) -> dict[str, Any]:
        return {"classnames": self.data.classnames}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}


@register("task", "video_localization", schema=LocalizationEval)
def build_video_localization(recipe: Recipe, run: RunDir) -> VideoLocalizationTask:
    """Temporal action localisation on long videos; mAP at tIoU 0.3:0.1:0.7."""
    return VideoLocalizationTask(recipe, run)


def _n(dataset: object) -> int:
    """Items in an optional split (0 when the source has none)."""
    return 0 if dataset is None else len(dataset)  # type: ignore[arg-type]
