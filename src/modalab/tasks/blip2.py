"""BLIP-2 on frozen towers: stage 1 trains the Q-Former with ITC + ITM + ITG, stage 2 feeds its
queries to the frozen language model (Li et al. 2023).

The captioner of ``tasks/caption.py`` with ``model.connector: {name: blip2_qformer}``
(``fusion/qformer_blip2.py``); everything else (pretrained towers, ``train.stages``, caption
evaluation) is the caption task's. The first entry of ``train.stages`` is BLIP-2's stage 1
(representation learning: the three objectives of ``align/blip2.py`` on the Q-Former, the LM
unused); every later stage is stage 2 (generative: next-token loss of the frozen LM on the
Q-Former's projected queries). Matching pairs for ITC/ITM are pairs of the same class.

Evaluation adds ``itc_zeroshot_top1``: each held-out image is given the class whose caption
"a handwritten <name>" has the highest ITC similarity.

Resuming a run in the middle of stage 1 restarts the stage-1 / stage-2 switch from the step the
runner resumes at (``after_step`` is what advances it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from modalab.align.blip2 import hard_negatives, itc_loss, itc_similarity, itg_loss, itm_loss
from modalab.config import ConfigError, Recipe
from modalab.data.sample import Batch
from modalab.experiment.rundir import RunDir
from modalab.fusion.qformer_blip2 import Blip2Connector
from modalab.registry import register
from modalab.tasks.caption import CaptionEval, CaptionTask
from modalab.text.tokenizer import PAD
from modalab.train.stages import stage_index


class Blip2Task(CaptionTask):
    """Caption task whose first stage trains the Q-Former with BLIP-2's three objectives."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        super().__init__(recipe, run)
        if not isinstance(self.model.connector, Blip2Connector):
            raise ConfigError("task blip2: set model.connector.name: blip2_qformer")
        if len(self.stages) < 2:
            raise ConfigError("task blip2: train.stages needs two entries (stage 1: Q-Former; stage 2: with the LM)")
        self.next_step = 0

    def image_tokens(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, N, D_enc); no graph through a frozen encoder."""
        live = any(p.requires_grad for p in self.model.encoder.parameters())
        with torch.set_grad_enabled(live and torch.is_grad_enabled()):
            return self.model.encoder(images)

    def itc(self, image: Tensor, tokens: Tensor) -> Tensor:
        """(B_i, B_t) ITC similarities of images (encoder tokens) and caption tokens."""
        conn: Blip2Connector = self.model.connector  # type: ignore[assignment]
        q, _ = conn.qformer(image, None, None, "itc")  # (B, Q, D)
        _, t = conn.qformer(None, tokens, tokens != PAD, "itc")  # (B, T, D)
        img = F.normalize(conn.itc_image(q), dim=-1)  # (B, Q, E)
        txt = F.normalize(conn.itc_text(t[:, 0]), dim=-1)  # (B, E) from [CLS]
        return itc_similarity(img, txt)

    def stage1_losses(self, batch: Batch) -> dict[str, Tensor]:
        conn: Blip2Connector = self.model.connector  # type: ignore[assignment]
        image, tokens = self.image_tokens(batch.images), batch.tokens
        b = tokens.shape[0]
        labels = batch.labels
        match = (labels[:, None] == labels[None, :]) if labels is not None else torch.eye(b, dtype=torch.bool)
        sim = self.itc(image, tokens)
        out = {"itc": itc_loss(sim * conn.logit_scale.exp().clamp(max=100.0), match)}
        neg_text, neg_image, has_text, has_image = hard_negatives(sim, match)
        imgs = torch.cat([image, image[has_text], image[neg_image[has_image]]])  # (B + K1 + K2, N, D_enc)
        toks = torch.cat([tokens, tokens[neg_text[has_text]], tokens[has_image]])
        q, _ = conn.qformer(imgs, toks, toks != PAD, "itm")
        is_match = torch.zeros(len(toks), dtype=torch.bool, device=toks.device)
        is_match[:b] = True
        out["itm"] = itm_loss(conn.itm_head(q).mean(dim=1), is_match)
        inp = tokens[:, :-1]
        _, t = conn.qformer(image, inp, inp != PAD, "itg")  # (B, T-1, D)
        out["itg"] = itg_loss(conn.itg_head(t), tokens[:, 1:], PAD)
        return out

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        if stage_index(self.stages, self.next_step) == 0:
            parts = self.stage1_losses(batch)
            return (sum(parts.values()),  # type: ignore[return-value]
                    {f"loss_{k}": float(v.detach()) for k, v in parts.items()})
        return super().step(batch)

    def after_step(self, step: int) -> dict[str, float]:
        self.next_step = step + 1
        return super().after_step(step)

    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        res = super().evaluate(final, split)
        self.model.eval()
        names = list(self.data.classnames or [])
        prompts = self.tokenizer([f"a handwritten {n}" for n in names])  # (K, L)
        dataset = self.data.val if split == "val" else self.data.test
        correct, total = 0, 0
        for b in DataLoader(dataset, batch_size=self.eval_cfg.batch_size, collate_fn=self.collate):
            pred = self.itc(self.image_tokens(b.images), prompts).argmax(dim=1)  # (B,)
            correct += int((pred == b.labels).sum())
            total += len(b)
        self.model.train()
        return {**res, "itc_zeroshot_top1": correct / total}


@register("task", "blip2", schema=CaptionEval)
def build_blip2(recipe: Recipe, run: RunDir) -> Blip2Task:
    """BLIP-2: Q-Former between frozen towers (ITC + ITM + ITG), then feeding the frozen LM."""
    return Blip2Task(recipe, run)


@register("prerequisites", "blip2")
def blip2_prerequisites(recipe: Recipe) -> list:
    """As the caption task: a contrastive run for the image tower when neither
    model.encoder.pretrained nor model.encoder.checkpoint is set."""
    from modalab.tasks.caption import caption_prerequisites

    return caption_prerequisites(recipe)
