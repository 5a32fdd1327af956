"""Video-text retrieval (CLIP4Clip-style) as the runner sees it.

Reads top to bottom: build data (any source whose samples are videos with captions: ``msrvtt_json``,
``moving_digits_text``), the word tokenizer from the training captions, the ``video_text`` model,
the objective; ``step`` is one contrastive batch; ``evaluate`` embeds a held-out split and reports
text-to-video and video-to-text R@1/5/10 and median rank, plus the order probe.

- Loss: the registered contrastive loss (``info_nce``) on (video, caption) embeddings; with the
  caption-conditioned pool (``frame_attention``) the video embedding depends on the caption, so the
  same symmetric cross-entropy is taken on the (B, B) logit matrix (``align/logits_info_nce.py``,
  equal to ``info_nce`` for a plain dot product). Identical captions in a batch are not negatives.
- Correct retrievals: the video's own caption, and any video / caption whose evaluation caption is
  the same text (several videos share a caption); ranks are pessimistic on ties
  (``eval/retrieval.py``).
- Order probe (``order_probe_acc``): for each held-out video whose record has ``swapped_caption``
  (the same two actions in the other order), the share where its true caption scores higher than
  the swapped one (a tie counts one half). An order-free pool on twin videos is at 0.5 by design.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import DataLoader

from modalab import registry
from modalab.align.logits_info_nce import info_nce_logits
from modalab.align.losses import same_label_mask
from modalab.config import ConfigError, EvalBase, Recipe
from modalab.data.sample import Batch, collate
from modalab.eval.retrieval import retrieval_ranks
from modalab.experiment.rundir import RunDir
from modalab.registry import register
from modalab.text.tokenizer import build_tokenizer


class VideoTextEval(EvalBase):
    batch_size: int = Field(64, gt=0)
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1)


def caption_ids(texts: list[str]) -> Tensor:
    """(B,) int64: equal ids for equal caption strings."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(t, len(ids)) for t in texts], dtype=torch.long)


def rank_summary(sim: Tensor, match: Tensor, prefix: str, ks: list[int]) -> dict[str, float]:
    """R@k, median and mean rank of queries (rows of ``sim``) with correct items ``match``."""
    ranks = retrieval_ranks(sim, match).double()  # (Q,)
    out = {f"{prefix}_median_rank": ranks.median().item(), f"{prefix}_mean_rank": ranks.mean().item()}
    out.update({f"{prefix}_R@{k}": (ranks <= k).double().mean().item() for k in ks})
    return out


class VideoTextTask:
    """Contrastive video-caption alignment; retrieval both ways on held-out videos."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe, self.run = recipe, run
        self.eval_cfg: VideoTextEval = recipe.eval  # type: ignore[assignment]
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        probe = self.data.test[0]
        if probe.text is None or probe.media is None or probe.media.dim() != 4:
            raise ValueError(f"task video_text needs videos (T, C, H, W) with captions; source "
                             f"'{recipe.data.source}' gives image {getattr(probe.media, 'shape', None)} "
                             f"and text {probe.text!r}")
        mcfg = recipe.model
        self.tokenizer = build_tokenizer(
            mcfg.tokenizer, self.data.texts, mcfg.context_length)  # type: ignore[attr-defined]
        self.num_frames = int(probe.media.shape[0])
        self.model = registry.build("model", mcfg.name, mcfg, vocab_size=self.tokenizer.vocab_size,
                                    image_size=self.data.image_size, channels=self.data.channels,
                                    max_frames=self.num_frames)
        self.objective = registry.build("loss", recipe.loss.name, recipe.loss)
        if getattr(self.model, "conditional", False) and recipe.loss.name != "info_nce":
            raise ConfigError(f"model.pool=frame_attention scores caption-video pairs jointly and is "
                              f"trained with info_nce on the logit matrix; set loss.name: info_nce "
                              f"(got {recipe.loss.name})")

    def train_loader(self) -> DataLoader:
        dataset, batch_size = self.data.train, self.recipe.train.batch_size
        if len(dataset) < batch_size:
            raise ValueError(f"train.batch_size={batch_size} exceeds the {len(dataset)} training "
                             "videos; lower train.batch_size")
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                          collate_fn=self.collate, num_workers=self.recipe.data.num_workers)

    def collate(self, samples: list) -> Batch:
        return collate(samples, self.tokenizer)

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        m = self.model
        video = m.encode_video(batch.images)  # (B, E) or (B, T, D)
        text = m.encode_text(batch.tokens)  # (B, E)
        labels = caption_ids(batch.texts).to(text.device)
        scale = m.scale()
        if m.conditional:
            logits = scale * m.similarity(video, text).T  # (Nv, Nt): rows are videos
            loss = info_nce_logits(logits, same_label_mask(labels))
        else:
            loss = self.objective(video, text, logit_scale=scale, labels=labels)
        return loss, {"logit_scale": float(scale.detach())}

    def after_step(self, step: int) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def embed(self, dataset: Any) -> tuple[Tensor, Tensor, list[str], list[str | None]]:
        """Video representations, caption embeddings, captions and order-swapped captions."""
        self.model.eval()

        def with_records(samples: list) -> tuple[Batch, list[str | None]]:
            return (collate(samples, self.tokenizer),
                    [s.meta.get("record", {}).get("swapped_caption") for s in samples])

        vids, texts, caps, swapped = [], [], [], []
        for b, sw in DataLoader(dataset, batch_size=self.eval_cfg.batch_size, collate_fn=with_records):
            vids.append(self.model.encode_video(b.images))
            texts.append(self.model.encode_text(b.tokens))
            caps += b.texts
            swapped += sw
        return torch.cat(vids), torch.cat(texts), caps, swapped

    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        dataset = self.data.val if split == "val" else self.data.test
        video, text, caps, swapped = self.embed(dataset)
        sim = self.model.similarity(video, text).float()  # (Nt, Nv)
        ids = caption_ids(caps)
        match = ids[:, None] == ids[None, :]  # (N, N): same caption text is correct both ways
        res: dict[str, Any] = rank_summary(sim, match, "text_to_video", self.eval_cfg.ks)
        res.update(rank_summary(sim.T, match.T, "video_to_text", self.eval_cfg.ks))
        res.update(self.order_probe(video, sim.diagonal(), swapped))
        if final and split == "test":
            self.run.write_artifact("retrieval_first_queries", {
                "captions": caps[:10],
                "top_videos": sim[:10].topk(min(5, sim.shape[1]), dim=1).indices.tolist(),
            })
        return res

    def order_probe(self, video: Tensor, true_scores: Tensor, swapped: list[str | None]) -> dict[str, float]:
        """Share of videos whose caption beats its order-swapped twin caption (ties: 1/2)."""
        keep = [i for i, s in enumerate(swapped) if s]
        if not keep:
            return {}
        tokens = self.tokenizer([swapped[i] for i in keep])
        swapped_emb = self.model.encode_text(tokens)  # (K, E)
        idx = torch.tensor(keep)
        if self.model.conditional:
            s_swap = self.model.similarity(video[idx], swapped_emb).diagonal()  # (K,)
        else:
            s_swap = (video[idx] * swapped_emb).sum(-1)  # (K,)
        s_true = true_scores[idx]
        score = (s_true > s_swap).double() + 0.5 * (s_true == s_swap).double()
        return {"order_probe_acc": score.mean().item(), "order_probe_n": float(len(keep)),
                "order_probe_margin": (s_true - s_swap).mean().item()}

    def counts(self) -> dict[str, Any]:
        n = lambda d: 0 if d is None else len(d)  # noqa: E731
        return {"num_train": n(self.data.train), "num_val": n(self.data.val), "num_test": n(self.data.test),
                "num_frames": self.num_frames, "num_skipped": self.data.num_skipped,
                "num_params": sum(p.numel() for p in self.model.parameters())}

    def state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_dict()}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}


@register("task", "video_text", schema=VideoTextEval)
def build_video_text_task(recipe: Recipe, run: RunDir) -> VideoTextTask:
    """Video-text retrieval (CLIP4Clip-style pools); R@1/5/10, median rank, order probe."""
    return VideoTextTask(recipe, run)
