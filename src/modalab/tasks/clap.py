"""Audio-text contrastive alignment (CLAP-style) as the runner sees it.

Audio plays the image role: an audio source (``spoken_digits``, ``audio_folder``) puts the waveform
in ``Sample.media`` and the ``clap_two_tower`` model embeds it with an audio tower, so the whole
contrastive task of ``tasks/contrastive.py`` — tokenizer, registered losses, logit-scale
clamp and temperature warnings, zero-shot (``eval/zeroshot.py``) and retrieval (``eval/retrieval.py``)
— runs unchanged. This task composes it and adds what audio evaluation needs:

- result keys keep the foundation's names: ``zeroshot_top1``/``zeroshot_top5`` (audio classified by
  text prompts), ``image_to_text_*`` = **audio -> text** retrieval, ``text_to_image_*`` = text -> audio;
- sample counts per split (``num_train``, ``num_test``) and, when ``data.split_by: speaker``, the
  held-out speakers with ``num_test/<speaker>`` and ``zeroshot_top1/<speaker>``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor
from torch.utils.data import DataLoader

from modalab.config import Recipe
from modalab.eval.zeroshot import class_embeddings, zeroshot_accuracy
from modalab.tasks.contrastive import ContrastiveEval, ContrastiveTask
from modalab.experiment.rundir import RunDir
from modalab.registry import register


class ClapEval(ContrastiveEval):
    prompts: list[str] = Field(
        default_factory=lambda: ["{label}", "a person saying {label}", "the spoken word {label}"],
        min_length=1,
    )


class ClapTask:
    """Audio-text alignment: a :class:`ContrastiveTask` on audio plus per-speaker reporting."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.inner = ContrastiveTask(recipe, run)
        self.model = self.inner.model
        self.data = self.inner.data
        if self.data.channels != 1 or not hasattr(self.data, "sr"):
            raise ValueError(f"task clap needs an audio source (spoken_digits, audio_folder); "
                             f"data.source={recipe.data.source} is not one")
        self.speakers: dict[str, list[str]] = getattr(self.data, "speakers", {}) or {}

    # the contrastive protocol, delegated ---------------------------------------------------
    def train_loader(self) -> DataLoader:
        return self.inner.train_loader()

    def step(self, batch: Any) -> tuple[Tensor, dict[str, float]]:
        return self.inner.step(batch)

    def embed_batch(self, batch: Any) -> dict[str, Tensor]:  # GradCache (train.accum_mode=exact)
        return self.inner.embed_batch(batch)

    def loss_from_embeddings(self, emb: dict[str, Tensor], batch: Any) -> tuple[Tensor, dict[str, float]]:
        return self.inner.loss_from_embeddings(emb, batch)

    def after_step(self, step: int) -> dict[str, float]:
        return self.inner.after_step(step)

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state(state)

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        return self.inner.extra_modules()

    # evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        res = self.inner.evaluate(final, split)
        if final and split == "test" and self.data.split_by == "speaker" and self.speakers.get("test"):
            res.update(self.per_speaker())
        return res

    @torch.no_grad()
    def per_speaker(self) -> dict[str, float]:
        """``zeroshot_top1/<speaker>`` for every held-out speaker."""
        audio_emb, _, labels, _ = self.inner.embed(self.data.test)
        if labels is None or not self.data.classnames:
            return {}
        m, tok = self.inner.model, self.inner.tokenizer
        dev = m.logit_scale.device
        cls = class_embeddings(lambda t: m.encode_text(tok(t).to(dev)).cpu(), self.data.classnames,
                               self.inner.eval_cfg.prompts)  # (C, E) on CPU, like audio_emb
        spk = self.speakers["test"]
        out = {}
        for s in sorted(set(spk)):
            idx = torch.tensor([i for i, x in enumerate(spk) if x == s])
            acc = zeroshot_accuracy(audio_emb[idx], cls, labels[idx], ks=(1,))
            out[f"zeroshot_top1/{s}"] = acc["zeroshot_top1"]
        return out

    def counts(self) -> dict[str, Any]:
        out = self.inner.counts()
        out["split_by"] = self.data.split_by
        out.update(self.data.extra_counts)
        if self.speakers:
            train, test = self.speakers.get("train", []), self.speakers.get("test", [])
            out["num_train_speakers"] = len(set(train))
            out["num_test_speakers"] = len(set(test))
            if self.data.split_by == "speaker":
                out["test_speakers"] = sorted(set(test))
                out.update({f"num_test/{s}": test.count(s) for s in sorted(set(test))})
        return out


@register("task", "clap", schema=ClapEval)
def build_clap_task(recipe: Recipe, run: RunDir) -> ClapTask:
    """Audio-text contrastive alignment (CLAP-style); zero-shot by text prompts and retrieval."""
    return ClapTask(recipe, run)
