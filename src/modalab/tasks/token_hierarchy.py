"""MusicLM-style hierarchical audio tokens (chapter 5.3) as the runner sees it.

Reads top to bottom; everything before the LM is trained in the constructor, on the training
split only (``data.source: event_clips``, one sound class per clip):

1. data      real clips (B, samples) with class labels; val / test held out.
2. codec     ``audio.codec`` (conv encoder -> RVQ -> decoder) trained ``model.codec_steps`` steps
             (``audio.codec_train``); acoustic tokens = its first ``model.acoustic_levels`` levels.
3. encoder   an EventCNN on log-mel trained to classify the clips (``model.encoder_steps``); its
             frame features (25 Hz) -> k-means (``audio.kmeans_tokens``) = the semantic tokens.
4. judge     a second EventCNN, another seed, trained the same way: it scores generations. Its
             accuracy on the real test clips is the ceiling of the class match.
5. LM        the two-stage model (``models/token_hierarchy``) that the runner trains:
             [class] semantic, then [class] semantic [sep] acoustic.

``evaluate(split)``: token NLL of both stages on the split's clips; the judge's accuracy on the
split's real clips (``judge_acc_real``) and on the codec's reconstruction of them at the modelled
levels (``judge_acc_codec``, the codec's ceiling); then ``eval.per_class`` clips per class are
generated (semantic -> acoustic -> codec decoder) and the judge's accuracy on them against the
conditioning class is ``class_match`` (chance 1 / n_classes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import DataLoader

from modalab import registry
from modalab.audio.codec import build_codec
from modalab.audio.codec_train import train_codec
from modalab.audio.encoders import EventCNN
from modalab.audio.frontend import LogMel
from modalab.audio.kmeans_tokens import KMeansTokenizer
from modalab.config import EvalBase, Recipe
from modalab.data.dataset import epoch_loader
from modalab.experiment.rundir import RunDir
from modalab.registry import register
from modalab.tasks.base import split_counts


class HierarchyEval(EvalBase):
    per_class: int = Field(10, gt=0, description="clips generated per class for the class match")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of both stages (0: greedy)")


class Classifier(nn.Module):
    """Waveform (B, samples) -> class logits (B, C) (mean of EventCNN's frame logits) and
    frame features (B, T', D) at 100 / 4 = 25 Hz."""

    def __init__(self, n_classes: int, n_mels: int) -> None:
        super().__init__()
        self.frontend = LogMel(n_mels)
        self.cnn = EventCNN(n_classes, n_mels, (16, 32, 64), "mean", 2, 0.1)

    def features(self, wave: Tensor) -> Tensor:
        return self.cnn.features(self.frontend(wave))  # (B, T', D)

    def forward(self, wave: Tensor) -> Tensor:
        return self.cnn.classifier(self.features(wave)).mean(1)  # (B, C)


def train_classifier(x: Tensor, y: Tensor, n_classes: int, n_mels: int, steps: int, lr: float, batch: int,
                     seed: int) -> Classifier:
    """Cross-entropy training on (x (N, samples), y (N,)); returned in eval mode."""
    torch.manual_seed(seed)
    model = Classifier(n_classes, n_mels)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(0, x.shape[0], (batch,), generator=g)
        loss = F.cross_entropy(model(x[rows]), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _stack(dataset) -> tuple[Tensor, Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([s.media for s in items]), torch.tensor([s.label for s in items])


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int = 256) -> float:
    pred = torch.cat([model(x[i:i + batch]).argmax(-1) for i in range(0, len(x), batch)])
    return float((pred == y).float().mean())


class TokenHierarchyTask:
    """Class-conditional clip generation with semantic then acoustic tokens; judged by a classifier."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe, self.run = recipe, run
        self.eval_cfg: HierarchyEval = recipe.eval  # type: ignore[assignment]
        cfg = self.cfg = recipe.model
        seed = recipe.run.seed
        if cfg.acoustic_levels > cfg.codec_levels:  # checked before any training
            raise ValueError(f"model.acoustic_levels={cfg.acoustic_levels} exceeds model.codec_levels="
                             f"{cfg.codec_levels}; model at most codec_levels RVQ levels")
        # 1. data
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        if not self.data.classnames or self.data.train[0].label is None:
            raise ValueError(f"task audio_tokens_hierarchy needs labelled clips (data.source: event_clips); "
                             f"data.source={recipe.data.source} gives unlabelled samples")
        self.n_classes = len(self.data.classnames)
        self.x, self.y = _stack(self.data.train)
        # 2. codec
        torch.manual_seed(seed)
        self.codec = build_codec(cfg.codec_channels, (4, 5, 4), cfg.codec_dim, cfg.codec_levels, cfg.codec_codebook,
                                 decay=cfg.codec_decay)
        self.codec_log = train_codec(self.codec, self.x, cfg.codec_steps, cfg.codec_batch, cfg.codec_lr,
                                     cfg.codec_wave_weight, cfg.codec_stft_weight, seed=seed,
                                     crop=cfg.codec_crop or None, warmup_steps=cfg.codec_warmup_steps,
                                     init_frames=cfg.codec_init_frames, quant_lr_scale=cfg.codec_quant_lr_scale,
                                     log=lambda m: print(m, flush=True), log_every=50)
        self.codec.eval()
        # 3. semantic encoder + k-means; 4. judge
        args = (self.n_classes, cfg.n_mels, cfg.encoder_steps, cfg.encoder_lr, 32)
        self.encoder = train_classifier(self.x, self.y, *args, seed=seed)
        self.judge = train_classifier(self.x, self.y, *args, seed=seed + 1000)
        with torch.no_grad():
            feats = self.encoder.features(self.x)  # (N, S, D)
        self.kmeans = KMeansTokenizer.fit(feats.flatten(0, 1), cfg.semantic_codes, seed=seed)
        self.sem, self.ac = self.tokens(self.x)
        # 5. the LM the runner trains
        self.model = registry.build("model", cfg.name, cfg, n_classes=self.n_classes, sem_len=self.sem.shape[1],
                                    frames=self.ac.shape[1])
        self.objective = registry.build("loss", recipe.loss.name, recipe.loss)

    @torch.no_grad()
    def tokens(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Waveforms (N, samples) -> semantic (N, S) and acoustic (N, T, Q) tokens."""
        sem = self.kmeans.encode(self.encoder.features(x))
        ac = self.codec.encode(x, self.cfg.acoustic_levels)
        return sem, ac

    # data / training ----------------------------------------------------------------------------
    def collate(self, rows: list[int]) -> dict[str, Tensor]:
        idx = torch.tensor(rows)
        return {"labels": self.y[idx], "sem": self.sem[idx], "ac": self.ac[idx]}

    def train_loader(self) -> DataLoader:
        return epoch_loader(range(len(self.y)), self.recipe.train.batch_size, self.collate)  # type: ignore[arg-type]

    def step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        dev = next(self.model.parameters()).device
        ls, la = self.model.stage_losses(batch["labels"].to(dev), batch["sem"].to(dev), batch["ac"].to(dev))
        return self.objective(ls, la), {"nll_semantic": float(ls.detach()), "nll_acoustic": float(la.detach())}

    def after_step(self, step: int) -> dict[str, float]:
        return {}

    # evaluation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        dataset = self.data.val if split == "val" else self.data.test
        if dataset is None:
            raise ValueError(f"data source '{self.recipe.data.source}' has no {split} split "
                             f"(data.val_fraction: {self.recipe.data.val_fraction})")
        self.model.eval()
        x, y = _stack(dataset)
        sem, ac = self.tokens(x)
        ls, la = self.model.stage_losses(y, sem, ac)
        recon = self.codec.decode(ac, x.shape[1])
        labels = torch.arange(self.n_classes).repeat_interleave(self.eval_cfg.per_class)
        g = torch.Generator().manual_seed(self.recipe.run.seed + (0 if split == "test" else 1))
        g_sem, g_ac = self.model.generate(labels, self.eval_cfg.temperature, g)
        wave = self.codec.decode(g_ac, x.shape[1])
        pred = self.judge(wave).argmax(-1)
        self.model.train()
        per_class = {f"class_match/{c}": float((pred[labels == i] == i).float().mean())
                     for i, c in enumerate(self.data.classnames)}
        res = {"nll_semantic": float(ls), "nll_acoustic": float(la), "judge_acc_real": accuracy(self.judge, x, y),
               "judge_acc_codec": accuracy(self.judge, recon, y), "class_match": float((pred == labels).float().mean()),
               "class_match_chance": 1.0 / self.n_classes, **per_class,
               "semantic_tokens_used": int(torch.unique(g_sem).numel())}
        if final and split == "test":
            self.run.write_artifact("generated", {"labels": labels.tolist(), "semantic": g_sem.tolist(),
                                                  "pred": pred.tolist()})
        return res

    def counts(self) -> dict[str, Any]:
        return {**split_counts(self.data), "num_params": sum(p.numel() for p in self.model.parameters()),
                "semantic_len": int(self.sem.shape[1]), "acoustic_frames": int(self.ac.shape[1]),
                "acoustic_levels": int(self.ac.shape[2]),
                "codec_bits_per_s": self.codec.bits_per_second(self.ac.shape[2]),
                "codec_final_loss": self.codec_log[-1] if self.codec_log else None,
                "kmeans_inertia": float(getattr(self.kmeans, "inertia", float("nan")))}

    def state(self) -> dict[str, Any]:
        return {}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"codec": self.codec, "encoder": self.encoder, "judge": self.judge, "kmeans": self.kmeans}


@register("task", "audio_tokens_hierarchy", schema=HierarchyEval)
def build_token_hierarchy_task(recipe: Recipe, run: RunDir) -> TokenHierarchyTask:
    """Semantic (k-means) then acoustic (RVQ) tokens, a two-stage class-conditioned LM, codec decoding."""
    return TokenHierarchyTask(recipe, run)
