"""Pretraining a small causal caption LM on caption text only, written out as a GPT-2 folder.

The "pretrained LLM" of the chapter's post-training recipes at toy scale
(``recipes/pretrain/caption_lm.yaml``): modalab's :class:`~modalab.text.decoder.TextDecoder` learns
next-token prediction on the captions of the training split (the images are never seen), with the
word tokenizer built from the source's caption texts. Validation and test report next-token loss
and accuracy on their own captions. At the end the LM is exported to ``<run>/hf`` as a
``GPT2LMHeadModel`` folder (``save_pretrained``) with a ``tokenizer.json`` giving the same ids, and
published to ``model.export_to`` when set, so ``model.decoder.pretrained: hf:DIR`` loads it through
``AutoModelForCausalLM``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import DataLoader

from modalab import registry
from modalab.config import EvalBase, NamedBase, Recipe
from modalab.data.dataset import epoch_loader
from modalab.data.sample import Batch, collate
from modalab.experiment.rundir import RunDir
from modalab.models.pretrained.export_decoder import export_decoder_hf
from modalab.models.pretrained.word_tokenizer_hf import save_word_tokenizer
from modalab.registry import register
from modalab.tasks.class_facts import class_facts
from modalab.tasks.pretrain_vit import publish
from modalab.text.decoder import TextDecoder
from modalab.text.tokenizer import PAD, WordTokenizer
from modalab.tasks.base import split_counts


class CaptionLMConfig(NamedBase):
    dim: int = Field(128, gt=0)
    depth: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)
    max_len: int = Field(32, gt=0, description="positions: visual prefix + caption in the later captioner")
    mlp_ratio: int = Field(4, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    context_length: int = Field(12, gt=2, description="caption tokens incl. <bos>/<eos>")
    export_to: str | None = Field(None, description="also publish the exported GPT-2 folder here")
    class_facts: bool = Field(
        False, description="also train on text facts naming each class (tasks/class_facts.py), so the class "
        "words are distinct tokens to the LM; without them a frozen LM cannot be made to caption (issue #23)"
    )


@register("model", "caption_lm", schema=CaptionLMConfig)
def build_caption_lm(cfg: CaptionLMConfig, *, vocab_size: int) -> TextDecoder:
    """modalab's causal text decoder (GPT-2 layout when exported)."""
    return TextDecoder(vocab_size, cfg.dim, cfg.depth, cfg.heads, cfg.max_len, cfg.mlp_ratio, cfg.dropout)


class CaptionLMEval(EvalBase):
    pass


class CaptionLMTask:
    """Next-token training on caption text; exports a GPT-2 folder with its tokenizer."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe, self.run = recipe, run
        self.cfg: CaptionLMConfig = recipe.model  # type: ignore[assignment]
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        if not self.data.texts:
            raise ValueError(f"task caption_lm: data source '{recipe.data.source}' has no caption texts")
        self.facts = class_facts(list(self.data.classnames or [])) if self.cfg.class_facts else []
        self.tokenizer = WordTokenizer.build(list(self.data.texts) + self.facts, self.cfg.context_length)
        self.fact_tokens = self.tokenizer(self.facts) if self.facts else None  # (F, L), every fact in every batch
        self.model = registry.build("model", self.cfg.name, self.cfg, vocab_size=self.tokenizer.vocab_size)
        self.objective = registry.build("loss", recipe.loss.name, recipe.loss)
        self.exported: dict[str, Any] = {}

    def collate(self, samples: list) -> Batch:
        return collate(samples, self.tokenizer)

    def train_loader(self) -> DataLoader:
        return epoch_loader(self.data.train, self.recipe.train.batch_size, self.collate, self.recipe.data.num_workers)

    def logits(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L) caption ids -> (logits (B, L-1, V), targets (B, L-1)); the image is not used."""
        inp, tgt = tokens[:, :-1], tokens[:, 1:]
        return self.model(inp, attention_mask=inp != PAD), tgt

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        tokens = batch.tokens  # (B, L)
        if self.fact_tokens is not None:
            tokens = torch.cat([tokens, self.fact_tokens], dim=0)  # (B + F, L)
        return self.objective(*self.logits(tokens)), {}

    def after_step(self, step: int) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        dataset = self.data.val if split == "val" else self.data.test
        self.model.eval()
        nll, correct, count = 0.0, 0, 0
        for b in DataLoader(dataset, batch_size=self.recipe.eval.batch_size, collate_fn=self.collate):
            logits, tgt = self.logits(b.tokens)
            real = tgt != PAD
            n = int(real.sum())
            nll += float(self.objective(logits, tgt)) * n
            correct += int(((logits.argmax(-1) == tgt) & real).sum())
            count += n
        self.model.train()
        if final and split == "test":
            self.export()
        return {"lm_loss": nll / count, "lm_token_accuracy": correct / count}

    def export(self) -> None:
        """``<run>/hf``: GPT2LMHeadModel + tokenizer.json; published to model.export_to."""
        path = getattr(self.run, "path", None)
        if path is None or self.exported:
            return
        out = export_decoder_hf(self.model, Path(path) / "hf")
        save_word_tokenizer(self.tokenizer, out)
        self.exported = {"export_hf": str(out), "export_to": publish(out, self.cfg.export_to, Path(path))}

    def counts(self) -> dict[str, Any]:
        return {**split_counts(self.data), "vocab_size": self.tokenizer.vocab_size,
                "num_params": sum(p.numel() for p in self.model.parameters()), **self.exported}

    def state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_dict()}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}


@register("task", "caption_lm", schema=CaptionLMEval)
def build_caption_lm_task(recipe: Recipe, run: RunDir) -> CaptionLMTask:
    """A causal LM of caption text only (no images); exported as a GPT-2 folder with its tokenizer."""
    return CaptionLMTask(recipe, run)
