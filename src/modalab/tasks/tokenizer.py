"""Image tokenizer training (chapter 5.2.2-5.2.3) as the runner sees it.

It reads top to bottom like ``tasks/contrastive.py``: build the data (any image source, e.g.
``digits``; images are mapped from the sources' [-1, 1] back to [0, 1]), the model
(``image_tokenizer``: encoder -> ``vq`` | ``fsq`` | ``continuous`` quantizer -> decoder, the token
grid chosen in the recipe; or ``vqvae2``: that grid as the bottom code map under a coarser top map,
``vision/vqvae2.py``), the objective (``vqgan``: L1/L2 + codebook/commitment + optional
perceptual term (``structural`` or ``lpips_features`` over a feature CNN trained on the training
split) + optional patch discriminator with the adaptive weight). ``step`` gives the
tokenizer's loss on one batch; once the discriminator is switched on, the engine steps it with its
own optimizer right after the tokenizer's step (``second_optimizer``, on the detached recons);
``evaluate`` reconstructs the held-out split and reports ``psnr``, ``ssim``, ``codebook_usage``,
``perplexity``, ``tokens_per_image`` and ``bits_per_image`` (``eval/reconstruction.py``); on
digit scenes ``eval.cell_probe`` adds a per-cell digit probe on real vs reconstructed scenes
(``eval/scene_probe.py``: does digit identity / count survive the tokens?).

Sweep codebook sizes with ``modalab sweep recipes/tokenizer_codebook_sweep.yaml --grid
model.codebook_size=64,256,1024,4096 --seeds 3``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import Tensor
from torch.utils.data import DataLoader

from modalab import registry
from modalab.config import EvalBase, Recipe
from modalab.data.sample import Batch, collate
from modalab.data.transforms import MEAN, STD
from modalab.experiment.rundir import RunDir
from modalab.registry import register
from modalab.eval.feature_net import FeatureNetConfig, cached_feature_net, feature_net_path
from modalab.eval.reconstruction import evaluate_tokenizer
from modalab.eval.reconstruction_fid import reconstruction_fid
from modalab.eval.scene_probe import cached_cell_probe, cell_labels, probe_metrics
from modalab.train.engine import SecondOptimizer
from modalab.vision.lpips_features import load_feature_lpips


# task -------------------------------------------------------------------------------------
class TokenizerEval(EvalBase):
    samples: int = Field(8, ge=0, description="held-out images (and reconstructions) saved as an artifact")
    fid: bool = Field(False, description="also report reconstruction FID, its real-vs-real floors and "
                      "lpips_feat on a feature CNN trained on the training split (eval/reconstruction_fid.py)")
    feature_net_steps: int = Field(300, gt=0, description="training steps of the FID feature CNN (seed 0)")
    cell_probe: bool = Field(False, description="digit_scenes only: per-cell digit probe (eval/scene_probe.py) "
                             "trained on real training scenes, scored on real and reconstructed held-out scenes")
    probe_steps: int = Field(600, gt=0, description="training steps of the cell probe")
    probe_cache_dir: str | None = Field(None, description="where trained cell probes are cached by a hash of "
                                        "their training data and settings (None: the run's eval_nets)")


class TokenizerTask:
    """Train an image tokenizer on an image source; report reconstruction and codebook health."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe = recipe
        self.run = run
        self.eval_cfg: TokenizerEval = recipe.eval  # type: ignore[assignment]
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        size, ch = self.data.image_size, self.data.channels
        if not isinstance(size, int):
            raise ValueError(f"task tokenizer needs square images of one size; data.source="
                             f"{recipe.data.source} gives image_size={size}")
        self.model = registry.build("model", recipe.model.name, recipe.model, image_size=size, in_channels=ch)
        if recipe.loss.name != "vqgan":
            raise ValueError(f"task tokenizer trains with loss.name=vqgan; got loss.name={recipe.loss.name}")
        lc = recipe.loss
        perceptual = None
        if getattr(lc, "perceptual", "structural") == "lpips_features" and lc.perceptual_weight > 0:
            # the perceptual network is trained on the training split only (never val or test)
            x, y = self.train_tensors()
            cfg = FeatureNetConfig(steps=lc.feature_net_steps, seed=lc.feature_net_seed)
            cached_feature_net(x, y, cfg, self.cache_dir)
            perceptual = load_feature_lpips(feature_net_path(x, y, cfg, self.cache_dir), channels=ch)
        self.objective = registry.build("loss", "vqgan", lc, in_channels=ch, image_size=size,
                                        perceptual=perceptual)
        disc = self.objective.discriminator
        lr = getattr(recipe.loss, "disc_lr", recipe.optim.lr)
        self.disc_opt = torch.optim.AdamW(disc.parameters(), lr=lr, betas=(0.5, 0.9)) if disc else None
        self.global_step = 0
        self._probe: torch.nn.Module | None = None  # the cell probe, trained at the first evaluation
        self._last: tuple[Tensor, Tensor] | None = None  # (images, detached recons) of the step

    # data ---------------------------------------------------------------------------------
    def train_loader(self) -> DataLoader:
        if len(self.data.train) < self.recipe.train.batch_size:
            raise ValueError(f"train.batch_size={self.recipe.train.batch_size} exceeds the "
                             f"{len(self.data.train)} training images; lower train.batch_size")
        return DataLoader(self.data.train, batch_size=self.recipe.train.batch_size, shuffle=True,
                          drop_last=True, collate_fn=collate, num_workers=self.recipe.data.num_workers)

    @property
    def cache_dir(self) -> Path:
        """Where the feature networks (perceptual loss, FID) of this run are cached."""
        return self.run.path / "eval_nets"

    def train_tensors(self) -> tuple[Tensor, Tensor]:
        """The whole training split as images (N, C, H, W) in [0, 1] and labels (N,)."""
        items = [self.data.train[i] for i in range(len(self.data.train))]
        if any(s.label is None for s in items):
            raise ValueError(f"data.source={self.recipe.data.source}: the feature network (loss.perceptual="
                             f"lpips_features, eval.fid) needs labelled training images")
        return (torch.stack([self.to_unit(s.media) for s in items]), torch.tensor([s.label for s in items]))

    @staticmethod
    def to_unit(images: Tensor) -> Tensor:
        """Source images (normalised to [-1, 1]) -> [0, 1], the range the metrics use."""
        return (images * STD + MEAN).clamp(0, 1)

    # training -----------------------------------------------------------------------------
    def step(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        x = self.to_unit(batch.images)  # (B, C, H, W)
        recon, _, aux = self.model(x)
        loss, logs = self.objective.generator_loss(x, recon, aux["loss"], self.global_step,
                                                   self.model.last_layer)
        self._last = (x, recon.detach())
        if "usage" in aux:
            logs.update(batch_usage=float(aux["usage"]), batch_perplexity=float(aux["perplexity"]))
        for level in ("top", "bottom"):  # VQ-VAE-2: each level's book
            if f"usage_{level}" in aux:
                logs[f"batch_usage_{level}"] = float(aux[f"usage_{level}"])
                logs[f"batch_perplexity_{level}"] = float(aux[f"perplexity_{level}"])
        return loss, {k: v for k, v in logs.items() if k != "total"}

    def discriminator_step_loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, float]] | None:
        """Hinge loss of the discriminator on this step's images vs the tokenizer's detached
        recons; None before ``loss.disc_start``."""
        if self._last is None or not self.objective.disc_active(step):
            return None
        x, recon = self._last
        return self.objective.discriminator_loss(x, recon, step)

    def second_optimizer(self) -> SecondOptimizer | None:
        """The discriminator's optimizer (when the GAN is on), stepped by the engine."""
        if self.disc_opt is None:
            return None
        return SecondOptimizer(self.disc_opt, self.discriminator_step_loss)

    def after_step(self, step: int) -> dict[str, float]:
        self.global_step = step + 1
        return {}

    # evaluation ---------------------------------------------------------------------------
    def held_out_images(self, split: str = "test") -> Tensor:
        """(N, C, H, W) images of ``split`` ("val" | "test", or "train" for the probe) in [0, 1]."""
        dataset = {"train": self.data.train, "val": self.data.val}.get(split, self.data.test)
        loader = DataLoader(dataset, batch_size=self.eval_cfg.batch_size, collate_fn=collate)
        return torch.cat([self.to_unit(b.images) for b in loader])

    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        final = final and split == "test"  # artifacts of record come from the test split only
        images = self.held_out_images(split).to(self.model.last_layer.device)
        res: dict[str, Any] = evaluate_tokenizer(self.model, images, self.eval_cfg.batch_size)
        if self.eval_cfg.fid:
            x, y = self.train_tensors()
            cfg = FeatureNetConfig(steps=self.eval_cfg.feature_net_steps, seed=0)
            res.update(reconstruction_fid(self.model, images, x.to(images.device), y, cfg, self.cache_dir,
                                          seed=self.recipe.run.seed, batch_size=self.eval_cfg.batch_size))
        if self.eval_cfg.cell_probe:
            res.update(self.cell_probe_metrics(split, images))
        if final and self.eval_cfg.samples:
            was = self.model.training
            self.model.eval()
            n = min(self.eval_cfg.samples, len(images))
            recon = self.model(images[:n])[0].clamp(0, 1)
            self.model.train(was)
            self.run.write_artifact("reconstructions", {
                "images": images[:n, 0].cpu().tolist(), "recons": recon[:, 0].cpu().tolist()})
        return res

    def scene_labels(self, split: str) -> Tensor:
        """(N, 4) cell labels of the ``split`` scenes ("train" | "val" | "test"; digit_scenes only)."""
        dataset = {"train": self.data.train, "val": self.data.val, "test": self.data.test}[split]
        items = [dataset[i] for i in range(len(dataset))]
        if any("scene" not in s.meta for s in items):
            raise ValueError(f"eval.cell_probe needs data.source=digit_scenes (samples with meta['scene']); "
                             f"got data.source={self.recipe.data.source}: set eval.cell_probe=false")
        return torch.stack([cell_labels(s.meta["scene"]) for s in items])

    def cell_probe_metrics(self, split: str, images: Tensor) -> dict[str, float]:
        """Probe accuracies on the real ``images`` of ``split`` (``probe_*_real``, the ceiling) and on
        their reconstructions (``probe_*``); the probe trains once, on the real training scenes."""
        labels = self.scene_labels(split)
        if self._probe is None:
            with torch.random.fork_rng(devices=[]):  # reading training scenes draws from the global RNG
                x, y = self.held_out_images("train"), self.scene_labels("train")
            cache = Path(self.eval_cfg.probe_cache_dir) if self.eval_cfg.probe_cache_dir else self.cache_dir
            self._probe = cached_cell_probe(x, y, cache, steps=self.eval_cfg.probe_steps,
                                            seed=self.recipe.run.seed).to(images.device)
        was = self.model.training
        self.model.eval()
        bs = self.eval_cfg.batch_size
        recon = torch.cat([self.model(images[i:i + bs])[0].clamp(0, 1) for i in range(0, len(images), bs)])
        self.model.train(was)
        real = probe_metrics(self._probe, images, labels.to(images.device), bs)
        rec = probe_metrics(self._probe, recon, labels.to(images.device), bs)
        return {**{f"probe_{k}": v for k, v in rec.items()}, **{f"probe_{k}_real": v for k, v in real.items()}}

    def counts(self) -> dict[str, Any]:
        return {
            "num_train": len(self.data.train),
            "num_val": _n(self.data.val), "num_test": len(self.data.test),
            "num_params": sum(p.numel() for p in self.model.parameters()),
            "codebook_size": self.model.codebook_size or 0,
            "quantizer": self.recipe.model.quantizer,  # type: ignore[attr-defined]
        }

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Nothing beyond the modules: the runner saves the discriminator's optimizer with the
        checkpoint and replays ``after_step`` for the step counter."""

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        """The objective when it holds modules (discriminator, perceptual network): moved to the
        device with the model and saved with its weights."""
        return {"objective": self.objective} if any(True for _ in self.objective.parameters()) else {}


@register("task", "tokenizer", schema=TokenizerEval)
def build_tokenizer_task(recipe: Recipe, run: RunDir) -> TokenizerTask:
    """Image tokenizer (VQ / FSQ / continuous) trained with the VQGAN objective; reconstruction eval."""
    return TokenizerTask(recipe, run)


def _n(dataset: object) -> int:
    """Items in an optional split (0 when the source has none)."""
    return 0 if dataset is None else len(dataset)  # type: ignore[arg-type]
