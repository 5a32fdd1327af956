"""Audio captioning with an audio LLM (chapter 5.3.1, end to end) as the runner sees it.

Data: a source whose samples carry ``meta["events"]`` (``sound_events``); each scene's reference
caption is its template caption (``data/sources/sound_captions.scene_caption``: events in onset
order, "over it" for an overlap). Model: ``audio_lm`` (log-mel -> Whisper-style encoder -> adapter ->
causal decoder). The decoder is first trained as a language model of the training captions
(cached, as the image captioner does); ``train.stages`` then switches what trains (e.g. encoder +
adapter with the decoder frozen, then adapter + decoder LoRA).

``evaluate`` decodes greedily on the test scenes and scores the generated captions:
``event_precision`` / ``event_recall`` / ``event_f1`` of the classes named, ``order_accuracy``
(the named sequence equals the true one), ``bleu4``, ``rouge_l`` and ``cider_d`` (``eval/cider.py``)
against the template caption, and ``caption_loss`` (teacher-forced NLL per caption).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import DataLoader

from modalab import registry
from modalab.config import EvalBase, Recipe
from modalab.data.dataset import epoch_loader
from modalab.data.sample import Sample
from modalab.data.sources.sound_captions import PHRASES, scene_caption
from modalab.eval.caption_events import event_scores
from modalab.eval.caption_metrics import corpus_bleu, rouge_l
from modalab.eval.cider import cider_d
from modalab.experiment.rundir import RunDir
from modalab.models.audio_lm import AudioLMConfig
from modalab.registry import register
from modalab.tasks.caption import pretrain_language_model
from modalab.text.decoder import TextDecoder
from modalab.text.tokenizer import BOS, EOS, PAD, WordTokenizer
from modalab.tasks.base import split_counts


class AudioLMEval(EvalBase):
    batch_size: int = Field(32, gt=0)
    num_examples: int = Field(8, ge=0, description="captions kept in results.json")


class AudioLMTask:
    """Sound-scene captioning: waveform -> audio LLM -> caption, staged training."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe, self.run = recipe, run
        self.eval_cfg: AudioLMEval = recipe.eval  # type: ignore[assignment]
        cfg: AudioLMConfig = recipe.model  # type: ignore[assignment]
        self.cfg = cfg
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        first = self.data.train[0]
        if "events" not in first.meta or not self.data.classnames:
            raise ValueError(f"task audio_lm needs a source with event labels (e.g. sound_events); "
                             f"data.source={recipe.data.source} gives samples without meta['events']")
        self.classes = tuple(self.data.classnames)
        self.train_captions = [scene_caption(self.data.train[i].meta["events"]) for i in range(len(self.data.train))]
        vocab_texts = [*self.train_captions, *PHRASES.values(), "over it , then silence"]
        d = cfg.decoder
        self.tokenizer = WordTokenizer.build(vocab_texts, d.context_length)
        longest = max(len(self.tokenizer.encode(c)) + 2 for c in self.train_captions)
        self.truncated = sum(len(self.tokenizer.encode(c)) + 2 > d.context_length for c in self.train_captions)
        run.log({"event": "captions", "longest_tokens": longest, "truncated": self.truncated})
        torch.manual_seed(recipe.run.seed)
        decoder = TextDecoder(self.tokenizer.vocab_size, d.dim, d.depth, d.heads, d.max_len, d.mlp_ratio, d.dropout)
        self.lm_info: dict[str, Any] = {}
        if d.pretrain_steps:
            self.lm_info = pretrain_language_model(decoder, self.tokenizer, self.train_captions, d, recipe.run.seed,
                                                   Path(recipe.run.out_dir) / "cache", run)
        self.model = registry.build("model", cfg.name, cfg, vocab_size=self.tokenizer.vocab_size, decoder=decoder,
                                    seed=recipe.run.seed)
        self.objective = registry.build("loss", recipe.loss.name, recipe.loss)

    # data ---------------------------------------------------------------------------------
    def collate(self, samples: list[Sample]) -> dict[str, Any]:
        events = [s.meta["events"] for s in samples]
        captions = [scene_caption(e) for e in events]
        return {"wave": torch.stack([s.media for s in samples]), "tokens": self.tokenizer(captions),
                "events": events, "captions": captions}

    def train_loader(self) -> DataLoader:
        return epoch_loader(self.data.train, self.recipe.train.batch_size, self.collate, self.recipe.data.num_workers)

    # training -----------------------------------------------------------------------------
    def loss(self, batch: dict[str, Any]) -> Tensor:
        tokens = batch["tokens"].to(batch["wave"].device)  # (B, L): <bos> words <eos> <pad>...
        inp, tgt = tokens[:, :-1], tokens[:, 1:]  # (B, L-1)
        return self.objective(self.model(batch["wave"], inp, inp != PAD), tgt)  # logits (B, L-1, V)

    def step(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        return self.loss(batch), {}

    def after_step(self, step: int) -> dict[str, float]:
        return {}

    # evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        """Caption metrics of ``split`` (val during training and for choices; test once at the end)."""
        dataset = self.data.val if split == "val" else self.data.test
        if dataset is None:
            raise ValueError(f"data source '{self.recipe.data.source}' has no {split} split "
                             f"(data.val_fraction: {self.recipe.data.val_fraction})")
        final = final and split == "test"  # examples of record come from test only
        self.model.eval()
        device = next(self.model.parameters()).device
        loader = DataLoader(dataset, batch_size=self.eval_cfg.batch_size, collate_fn=self.collate)
        hyps, refs, events, nll, n = [], [], [], 0.0, 0
        for b in loader:
            b["wave"] = b["wave"].to(device)
            nll += float(self.loss(b)) * len(b["captions"])
            n += len(b["captions"])
            prompt = torch.full((len(b["captions"]), 1), BOS, dtype=torch.long, device=device)
            out = self.model.generate(b["wave"], prompt, self.cfg.decoder.context_length - 1, eos_id=EOS, pad_id=PAD)
            for row in out.tolist():
                hyps.append(self.tokenizer.decode([t for t in row if t not in (EOS, PAD)]))
            refs += [[c] for c in b["captions"]]
            events += b["events"]
        self.model.train()
        res: dict[str, Any] = {**event_scores(hyps, events, self.classes),
                               "bleu4": corpus_bleu(hyps, refs), "rouge_l": rouge_l(hyps, refs),
                               "cider_d": cider_d(hyps, refs),
                               "caption_loss": nll / max(n, 1)}
        if final:
            ex = [{"reference": r[0], "caption": h} for h, r in zip(hyps, refs)][: self.eval_cfg.num_examples]
            res["caption_examples"] = ex
            self.run.write_artifact("captions", ex)
        return res

    def counts(self) -> dict[str, Any]:
        return {**split_counts(self.data),
                "num_params": sum(p.numel() for p in self.model.parameters()),
                "captions_truncated": self.truncated, "audio_tokens_per_second": self.model.adapter.tokens_per_second,
                "decoder_lm": self.lm_info}

    def state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_dict()}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}


@register("task", "audio_lm", schema=AudioLMEval)
def build_audio_lm_task(recipe: Recipe, run: RunDir) -> AudioLMTask:
    """Caption sound scenes end to end: waveform -> encoder -> adapter -> causal decoder."""
    return AudioLMTask(recipe, run)
