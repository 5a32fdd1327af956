"""Sound-event tagging and detection (chapter 5.3.2) as the runner sees it.

It reads top to bottom like ``tasks/contrastive.py``: build the data (a source whose samples
carry ``meta["events"]``, i.e. ``sound_events``), the model (``event_cnn``: frame logits pooled to
clip probabilities by max / mean / attention), the objective (``event_bce``); ``step`` trains on one
batch; ``evaluate`` scores the held-out scenes:

- ``tagging_mAP``: macro mean over classes of the average precision of ``clip_prob`` (``AP/<class>``);
- ``frame_F1``: micro F1 of ``frame_prob >= threshold`` against the exact event spans;
- ``onset_F1``: events decoded from thresholded frames, onsets matched within ``onset_tolerance``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor
from torch.utils.data import DataLoader

from modalab import registry
from modalab.config import EvalBase, Recipe
from modalab.data.batches import EventBatch
from modalab.data.sample import Sample
from modalab.data.sources.sound_events import clip_targets, frame_targets
from modalab.data.sources.sound_captions import scene_caption
from modalab.eval.caption_events import event_scores, merge_fragments
from modalab.eval.caption_metrics import corpus_bleu, rouge_l
from modalab.eval.cider import cider_d
from modalab.eval.jackknife import caption_event_counts, map_values, micro_f1_values
from modalab.eval.tagging import decode_events, frame_f1, mean_average_precision, onset_f1
from modalab.experiment.rundir import RunDir
from modalab.registry import register


class EventsEval(EvalBase):
    threshold: float = Field(0.5, gt=0, lt=1, description="frame probability counted as active")
    onset_tolerance: float = Field(0.2, gt=0, description="seconds (DCASE collar)")
    min_event_s: float = Field(0.0, ge=0, description="drop decoded events shorter than this")
    caption_merge_gap_s: float = Field(0.3, ge=0, description="cascade captions: join same-label detections "
                                       "this close before writing the template caption")


def cascade_captions(reference: list[list[dict]], decoded: list[list[dict]], classes: tuple[str, ...],
                     merge_gap_s: float) -> dict[str, float]:
    """The cascaded captioner (detector -> template caption), scored as task ``audio_lm`` scores captions."""
    hyps = [scene_caption(merge_fragments(d, merge_gap_s)) for d in decoded]
    refs = [[scene_caption(r)] for r in reference]
    scores = {**event_scores(hyps, reference, classes), "bleu4": corpus_bleu(hyps, refs),
              "rouge_l": rouge_l(hyps, refs), "cider_d": cider_d(hyps, refs)}
    return {f"cascade/{k}": v for k, v in scores.items()}


def per_item_scores(targets: np.ndarray, clip_prob: np.ndarray, reference: list[list[dict]],
                    decoded: list[list[dict]], classes: tuple[str, ...], merge_gap_s: float) -> dict[str, Any]:
    """``artifacts/per_item.json`` for ``modalab compare``'s two-level bootstrap: tagging_mAP and the
    cascade's micro event F1 are corpus metrics, so each test scene gets its jackknife value
    (eval/jackknife.py), whose mean over the scenes is the metric itself."""
    hyps = [scene_caption(merge_fragments(d, merge_gap_s)) for d in decoded]
    maps = map_values(targets, clip_prob).tolist()
    f1s = micro_f1_values(caption_event_counts(hyps, reference, classes)).tolist()
    return {"split": "test", "ids": list(range(len(reference))), "kind": "jackknife values",
            "metrics": {"tagging_mAP": maps, "cascade/event_f1": f1s}}


class AudioEventsTask:
    """Weakly (or strongly) supervised sound-event tagging and detection."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe = recipe
        self.run = run
        self.eval_cfg: EventsEval = recipe.eval  # type: ignore[assignment]
        # data
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        first = self.data.train[0]
        if "events" not in first.meta or not self.data.classnames:
            raise ValueError(f"task audio_events needs a source with event labels (e.g. sound_events); "
                             f"data.source={recipe.data.source} gives samples without meta['events']")
        self.classes = tuple(self.data.classnames)
        # model and objective
        self.model = registry.build("model", recipe.model.name, recipe.model, n_classes=len(self.classes),
                                    seed=recipe.run.seed)
        self.objective = registry.build("loss", recipe.loss.name, recipe.loss)

    # data ---------------------------------------------------------------------------------
    def collate(self, samples: list[Sample]) -> EventBatch:
        events = [s.meta["events"] for s in samples]
        targets = torch.from_numpy(np.stack([clip_targets(e, self.classes) for e in events]))  # (B, C)
        return EventBatch([s.id for s in samples], torch.stack([s.media for s in samples]), targets, events)

    def train_loader(self) -> DataLoader:
        if len(self.data.train) < self.recipe.train.batch_size:
            raise ValueError(f"train.batch_size={self.recipe.train.batch_size} exceeds the "
                             f"{len(self.data.train)} training scenes; lower train.batch_size")
        return DataLoader(self.data.train, batch_size=self.recipe.train.batch_size, shuffle=True,
                          drop_last=True, collate_fn=self.collate, num_workers=self.recipe.data.num_workers)

    def frame_targets(self, events: list[list[dict]], n_frames: int) -> Tensor:
        """(B, n_frames, C) exact frame activity at the model's output frame rate."""
        return torch.from_numpy(np.stack([frame_targets(e, n_frames, self.model.hop_s, self.classes)
                                          for e in events]))

    # training -----------------------------------------------------------------------------
    def step(self, batch: EventBatch) -> tuple[Tensor, dict[str, float]]:
        out = self.model(batch.audio)
        frames = self.frame_targets(batch.events, out["frame_logits"].shape[1]).to(out["frame_logits"].device)
        loss = self.objective(out["clip_prob"], batch.clip_targets, out["frame_logits"], frames)
        return loss, {}

    def after_step(self, step: int) -> dict[str, float]:
        return {}

    # evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, dataset: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[dict]]]:
        """clip_prob (N, C), frame_prob (N, T', C), clip targets (N, C), reference events."""
        self.model.eval()
        loader = DataLoader(dataset, batch_size=self.eval_cfg.batch_size, collate_fn=self.collate)
        device = next(self.model.parameters()).device
        clips, frames, targets, events = [], [], [], []
        for b in loader:
            out = self.model(b.audio.to(device))
            clips.append(out["clip_prob"].float().cpu())
            frames.append(out["frame_prob"].float().cpu())
            targets.append(b.clip_targets)
            events += b.events
        return (torch.cat(clips).numpy(), torch.cat(frames).numpy(), torch.cat(targets).numpy(), events)

    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        dataset = self.data.val if split == "val" else self.data.test  # val: eval_every and tuning
        final = final and split == "test"  # artifacts of record come from the test split only
        clip_prob, frame_prob, targets, events = self.predict(dataset)
        e = self.eval_cfg
        m_ap, aps = mean_average_precision(targets, clip_prob)
        ref_frames = np.stack([frame_targets(ev, frame_prob.shape[1], self.model.hop_s, self.classes)
                               for ev in events])  # (N, T', C)
        decoded = [decode_events(p, self.model.hop_s, self.classes, e.threshold, e.min_event_s)
                   for p in frame_prob]
        res: dict[str, Any] = {
            "tagging_mAP": m_ap,
            "frame_F1": frame_f1(ref_frames, frame_prob, e.threshold),
            "onset_F1": onset_f1(events, decoded, e.onset_tolerance),
            "clip_F1": frame_f1(targets, clip_prob, e.threshold),
            "events_reference": sum(len(x) for x in events),
            "events_decoded": sum(len(x) for x in decoded),
        }
        res.update({f"AP/{c}": float(a) for c, a in zip(self.classes, aps) if np.isfinite(a)})
        res.update(cascade_captions(events, decoded, self.classes, e.caption_merge_gap_s))
        if final:
            k = min(8, len(events))
            self.run.write_artifact("detections", {"hop_s": self.model.hop_s, "classes": list(self.classes),
                                                   "reference": events[:k], "decoded": decoded[:k]})
            self.run.write_artifact("per_item", per_item_scores(targets, clip_prob, events, decoded, self.classes,
                                                                e.caption_merge_gap_s))
        return res

    def counts(self) -> dict[str, Any]:
        return {
            "num_train": len(self.data.train),
            "num_val": _n(self.data.val), "num_test": len(self.data.test),
            "num_skipped": self.data.num_skipped,
            "num_params": sum(p.numel() for p in self.model.parameters()),
            "frame_hop_s": self.model.hop_s,
            "pooling": self.model.cnn.pooling,
        }

    def state(self) -> dict[str, Any]:
        return {"classes": list(self.classes)}

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        return {}


@register("task", "audio_events", schema=EventsEval)
def build_audio_events(recipe: Recipe, run: RunDir) -> AudioEventsTask:
    """Sound-event tagging (mAP) and detection (frame F1, onset F1) on synthetic scenes."""
    return AudioEventsTask(recipe, run)


def _n(dataset: object) -> int:
    """Items in an optional split (0 when the source has none)."""
    return 0 if dataset is None else len(dataset)  # type: ignore[arg-type]
