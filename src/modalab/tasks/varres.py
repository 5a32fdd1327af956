"""Contrastive alignment on images of any size (chapter 5.2.3-5.2.4): NaViT packing, aspect-ratio
buckets, a resolution curriculum with multi-scale training.

The task composes :class:`~modalab.tasks.contrastive.ContrastiveTask` (data, tokenizer, model,
objective, temperature checks and the evaluation: zero-shot + retrieval + monitors) and replaces
how images become a batch. The recipe's ``data.batching`` (:class:`VarResBatchingSpec`) says how:

- ``resize: smart``: each image keeps its aspect ratio and is resized to at most ``max_patches``
  patches (``vision/resolution.smart_resize`` with factor = the ViT patch); the images of a batch
  go through ``VisionTransformer.forward_packed`` laid out by ``layout``: ``pack`` (greedy NaViT
  sequences of ``max_seq_len``, block-diagonal attention), ``bucket`` (aspect-ratio buckets, one
  image per row padded to the batch's longest) or ``pad`` (random batches, one image per row).
  The three layouts give the same embeddings; they differ in padding, hence in cost.
- ``resize: pix2struct``: as ``smart`` but every image is scaled, up or down, to the largest
  aspect-preserving grid within the budget (Pix2Struct), so small images are enlarged.
- ``resize: fixed``: every image is padded into the ``data.image_size`` square and goes through the
  plain ViT forward (the fixed-resolution baseline; FLIP's ``patch_dropout`` applies there).
- ``schedule``: per-sample patch budgets drawn by training progress (e.g. 100% low, then 60/30/10,
  then 30/40/30) and one multi-scale factor per step; evaluation uses ``max_patches``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from modalab.config import Recipe
from modalab.data.batching import VarResBatchingSpec, bucket_batches, multiscale_size, random_batches
from modalab.data.dataset import check_batch_fits
from modalab.data.sample import Sample
from modalab.eval.retrieval import pad_cat
from modalab.tasks.contrastive import ContrastiveEval, ContrastiveTask
from modalab.experiment.rundir import RunDir
from modalab.registry import register
from modalab.vision.packing import PackedBatch, pack_images
from modalab.vision.resolution import pix2struct_grid, resize, resize_fixed, smart_resize

BACKGROUND = -1.0  # normalised value of an empty canvas; the fixed policy pads with it


def budget_size(
    size: tuple[int, int], patch: int, max_patches: int, policy: str = "smart"
) -> tuple[int, int]:
    """(h, w) multiples of ``patch`` with the aspect ratio of ``size`` and at most ``max_patches``
    patches. ``smart``: Qwen2-VL smart_resize (factor = patch; only images above the budget shrink);
    ``pix2struct``: the largest such grid, so small images are scaled up to fill the budget."""
    if policy == "pix2struct":
        rows, cols = pix2struct_grid(size[0], size[1], max_patches, patch)
        return rows * patch, cols * patch
    if policy != "smart":
        raise ValueError(f"budget_size: unknown policy '{policy}'; expected 'smart' or 'pix2struct'")
    return smart_resize(size[0], size[1], factor=patch, min_pixels=patch * patch, max_pixels=max_patches * patch**2)


@dataclass
class Packing:
    """How a batch's resized images were laid out, so that a part of it can be laid out again."""

    patch: int
    max_seq_len: int | None  # None: one image per row (layouts bucket / pad)
    drop: float  # token dropping rate (0: none)
    seed: int  # the dropping stream of this batch (micro-batch i draws from seed + i + 1)


@dataclass
class VarResBatch:
    """A training or evaluation batch: images either packed (``packed``) or stacked (``images``,
    (B, C, S, S)); tokens (B, L); labels (B,) or None. ``sources``: the resized images before
    packing, on the CPU (kept so that :meth:`micro_batches` can re-pack a part); ``budgets``: their
    patch budgets."""

    ids: list[str]
    tokens: Tensor
    labels: Tensor | None
    packed: PackedBatch | None = None
    images: Tensor | None = None
    mean_budget: float = 0.0
    sources: list[Tensor] | None = None
    packing: Packing | None = None
    budgets: list[int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> "VarResBatch":
        mv = lambda t: t.to(device) if t is not None else None  # noqa: E731
        packed = self.packed.to(device) if self.packed is not None else None
        return VarResBatch(self.ids, mv(self.tokens), mv(self.labels), packed, mv(self.images), self.mean_budget,
                           self.sources, self.packing, self.budgets)

    def micro_batches(self, n: int) -> list["VarResBatch"]:
        """``n`` consecutive parts of ``len(self) / n`` images each; packed images are packed again
        per part (a part encodes only its own images; without token dropping its embeddings equal
        those of the same images in the whole batch: attention stays within each image)."""
        m = len(self) // n
        out = []
        for i in range(n):
            a, b = i * m, (i + 1) * m
            labels = self.labels[a:b] if self.labels is not None else None
            part = VarResBatch(self.ids[a:b], self.tokens[a:b], labels, budgets=None)
            if self.images is not None:
                part.images, part.mean_budget = self.images[a:b], self.mean_budget
            else:
                if self.sources is None or self.packing is None:
                    raise ValueError("VarResBatch.micro_batches: a packed batch without its sources")
                pk, src = self.packing, self.sources[a:b]
                budgets = self.budgets[a:b] if self.budgets is not None else None
                gen = torch.Generator().manual_seed(pk.seed + i + 1) if pk.drop else None
                part.packed = pack_images(src, pk.patch, pk.max_seq_len, drop=pk.drop or None, generator=gen,
                                          groups=None if pk.max_seq_len else [[j] for j in range(len(src))])
                if self.packed is not None:  # the sources stay on the CPU; the parts go where the batch is
                    part.packed = part.packed.to(self.packed.patches.device)
                part.sources, part.packing, part.budgets = src, pk, budgets
                part.mean_budget = sum(budgets) / len(budgets) if budgets else self.mean_budget
            out.append(part)
        return out


class VarResLoader:
    """Batches of one epoch per iteration (each ``__iter__`` is a new epoch); the step counter
    runs across epochs so the curriculum follows training progress.

    Across ``world`` processes (torchrun): every rank draws the same global batches of
    ``batch_size`` and builds positions ``rank, rank + world, ...`` of each, with the patch budgets the
    curriculum assigns to the whole global batch; so the ranks' local batches of a step together are
    the single-process batch (the same images, budgets and multi-scale factor).

    Resumable: ``train/loader.TrainStream`` calls ``set_epoch`` and ``set_position`` before each
    epoch, so a resumed run draws the same batches at the same curriculum steps as one that was
    never stopped (the batches already consumed are skipped without being built)."""

    def __init__(self, task: "VarResTask", batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if world < 1 or not 0 <= rank < world or batch_size % world:
            raise ValueError(f"VarResLoader: train.batch_size={batch_size} must split evenly over {world} "
                             f"process(es) (rank {rank}); use a multiple of {world}")
        self.task, self.batch_size, self.seed = task, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch = 0
        self.step = 0
        self.skip = 0  # batches of the coming epoch already consumed before a resume

    def order(self, epoch: int) -> list[list[int]]:
        """The batches (indices into the training split) of one epoch."""
        data = self.task.clip.data.train
        if self.task.spec.layout == "bucket" and self.task.spec.resize != "fixed":
            return bucket_batches(data.sizes, self.batch_size, self.seed, epoch, drop_last=True)
        return [b for b in random_batches(len(data), self.batch_size, self.seed, epoch)
                if len(b) == self.batch_size]

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # a jump (resume): the step counter counts the epochs before it
            self.step = sum(len(self.order(e)) for e in range(epoch))
        self.epoch = epoch

    def set_position(self, skip: int, batch_size: int) -> None:
        if batch_size != self.batch_size:
            raise ValueError(f"VarResLoader: resumed with batch size {batch_size}; it draws {self.batch_size}")
        self.skip = skip

    def __iter__(self):
        data = self.task.clip.data.train
        order, skip = self.order(self.epoch), self.skip
        self.epoch, self.skip = self.epoch + 1, 0
        self.step += skip
        for idx in order[skip:]:
            mine = idx[self.rank :: self.world]  # this rank's share of the global batch
            budgets = self.task.train_budgets(len(idx), self.step)  # drawn for the global batch
            local = budgets[self.rank :: self.world] if budgets is not None else None
            batch = self.task.make_batch([data[i] for i in mine], step=self.step, train=True, budgets=local)
            self.step += 1
            yield batch


class VarResTask:
    """Image-text contrastive alignment with variable-resolution images."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        spec = getattr(recipe.data, "batching", None)
        if not isinstance(spec, VarResBatchingSpec):
            raise ValueError(
                f"task 'contrastive_varres' needs a data source with a 'batching' section (e.g. "
                f"data.source: varres_digits); data.source '{recipe.data.source}' has none"
            )
        if spec.resize == "fixed" and spec.schedule is not None:
            raise ValueError(
                "data.batching.schedule needs data.batching.resize: smart or pix2struct "
                "(budgets are patch counts)"
            )
        self.recipe, self.spec = recipe, spec
        self.clip = ContrastiveTask(recipe, run)  # data, tokenizer, model, objective, evaluation
        self.clip.embed = self.embed  # its evaluation embeds the test split through this task
        if self.clip.needs_tokens and spec.resize != "fixed":
            raise ValueError(
                f"loss '{recipe.loss.name}' needs token-level features, which packed batches do not "
                f"provide; use a global loss or data.batching.resize: fixed"
            )
        self.model = self.clip.model
        self.data = self.clip.data  # train / val / test splits (val for eval_every and tuning)
        self.vit = self.model.image_encoder
        self.patch = recipe.model.vision.patch_size  # type: ignore[attr-defined]
        self.schedule = spec.schedule.build() if spec.schedule is not None else None
        self.rank = torch.distributed.get_rank() if _distributed() else 0
        self.generator = torch.Generator()  # token dropping: re-seeded per (seed, step, rank) batch
        self.real_tokens = self.slots = self.images_seen = 0

    # batches ------------------------------------------------------------------------------
    def train_budgets(self, n: int, step: int) -> list[int] | None:
        """Per-sample patch budgets of a global training batch of ``n`` at ``step`` (the curriculum's
        exact shares, in a random order seeded by the run and step); None without a schedule."""
        if self.schedule is None or self.spec.resize == "fixed":
            return None
        return self.schedule.assign(n, step / self.recipe.train.steps, self.recipe.run.seed, step)

    def make_batch(self, samples: list[Sample], step: int = 0, train: bool = False,
                   budgets: list[int] | None = None) -> VarResBatch:
        """Resize the samples' images by the recipe's policy and lay them out. ``budgets``: the
        samples' patch budgets in training (default: the curriculum's for this batch alone)."""
        tokens = self.clip.tokenizer([s.text for s in samples])
        labels = torch.tensor([s.label for s in samples]) if all(s.label is not None for s in samples) else None
        ids = [s.id for s in samples]
        if self.spec.resize == "fixed":
            size = self.clip.data.image_size
            images = torch.stack([resize_fixed(s.media, size, "pad", fill=BACKGROUND) for s in samples])
            return VarResBatch(ids, tokens, labels, images=images, mean_budget=(size // self.patch) ** 2)
        if train and self.schedule is not None:
            budgets = budgets if budgets is not None else self.train_budgets(len(samples), step)
        else:
            budgets = [self.spec.max_patches] * len(samples)
        if len(budgets) != len(samples):
            raise ValueError(f"make_batch: {len(budgets)} patch budgets for {len(samples)} samples")
        ms = self.spec.schedule.multiscale if train and self.spec.schedule is not None else None
        images = []
        for s, budget in zip(samples, budgets):
            h, w = budget_size(tuple(s.media.shape[-2:]), self.patch, budget, self.spec.resize)
            if ms:
                h, w = multiscale_size((h, w), self.recipe.run.seed, step, ms[0], ms[1], self.patch)
            images.append(resize(s.media, h, w))
        layout = self.spec.layout if train else "pack"  # evaluation: the cheapest exact layout
        seed = (self.recipe.run.seed * 1_000_003 + step) * 1_009 + self.rank  # a dropping stream per batch
        if train and self.spec.token_drop:  # (run seed, step, rank): resumes need no generator state
            self.generator.manual_seed(seed)
        groups = None if layout == "pack" else [[i] for i in range(len(images))]
        max_len = self.spec.max_seq_len if layout == "pack" else None
        drop = self.spec.token_drop if train else 0.0
        packed = pack_images(images, self.patch, max_len, drop=drop or None, generator=self.generator,
                             groups=groups)
        return VarResBatch(ids, tokens, labels, packed=packed, mean_budget=sum(budgets) / len(budgets),
                           sources=images, packing=Packing(self.patch, max_len, drop, seed), budgets=budgets)

    def train_loader(self) -> VarResLoader:
        check_batch_fits(len(self.clip.data.train), self.recipe.train.batch_size)
        world = torch.distributed.get_world_size() if _distributed() else 1
        return VarResLoader(self, self.recipe.train.batch_size, self.recipe.run.seed, self.rank, world)

    def encode_images(self, batch: VarResBatch) -> Tensor:
        """(B, E) unit-norm image embeddings of a batch, packed or stacked."""
        if batch.packed is None:
            return self.model.encode_image(batch.images)
        return F.normalize(self.model.image_proj(self.vit.forward_packed(batch.packed)), dim=-1)

    # training -----------------------------------------------------------------------------
    def step(self, batch: VarResBatch) -> tuple[Tensor, dict[str, float]]:
        return self.loss_from_embeddings(self.embed_batch(batch), batch)

    def embed_batch(self, batch: VarResBatch) -> dict[str, Tensor]:
        """(B, E) image and text embeddings; with :meth:`loss_from_embeddings` the split that exact
        (GradCache) accumulation needs: the micro-batches keep the whole batch's negatives."""
        return {"image_emb": self.encode_images(batch), "text_emb": self.model.encode_text(batch.tokens)}

    def loss_from_embeddings(self, emb: dict[str, Tensor], batch: VarResBatch) -> tuple[Tensor, dict[str, float]]:
        """The recipe's objective on the batch's embeddings (as in 'contrastive') and the token counts."""
        loss, _ = self.clip.loss_from_embeddings(emb, batch)
        if batch.packed is not None:
            real, slots = int(batch.packed.valid.sum()), batch.packed.valid.numel()
        else:
            real = slots = len(batch) * (1 + self.vit.num_patches)
        self.real_tokens, self.slots, self.images_seen = (
            self.real_tokens + real, self.slots + slots, self.images_seen + len(batch))
        return loss, {"real_token_share": real / slots, "tokens_per_image": real / len(batch),
                      "patch_budget": batch.mean_budget}

    def after_step(self, step: int) -> dict[str, float]:
        return self.clip.after_step(step)

    # evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, dataset: Any) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """Image and text embeddings (N, E) of ``dataset`` at the evaluation resolution, labels and
        the captions' (N, L) token rows (as ``ContrastiveTask.embed``)."""
        self.model.eval()
        bs = self.clip.eval_cfg.batch_size
        dev = self.model.logit_scale.device
        imgs, txts, labels, tokens = [], [], [], []
        for a in range(0, len(dataset), bs):
            batch = self.make_batch([dataset[i] for i in range(a, min(a + bs, len(dataset)))])
            moved = batch.to(dev) if dev.type != "cpu" else batch
            imgs.append(self.encode_images(moved).float().cpu())
            txts.append(self.model.encode_text(moved.tokens).float().cpu())
            tokens.append(batch.tokens.cpu())
            if batch.labels is not None:
                labels.append(batch.labels)
        lab = torch.cat(labels) if labels and len(labels) == len(imgs) else None
        return torch.cat(imgs), torch.cat(txts), lab, pad_cat(tokens)

    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        return self.clip.evaluate(final, split)

    def counts(self) -> dict[str, Any]:
        out = self.clip.counts()
        out["train_real_token_share"] = self.real_tokens / max(1, self.slots)
        out["train_tokens_per_image"] = self.real_tokens / max(1, self.images_seen)
        return out

    def state(self) -> dict[str, Any]:
        """The contrastive task's state and the token counters (the token-dropping generator is
        re-seeded per batch, so it needs no state)."""
        return {**self.clip.state(), "varres": {
            "real_tokens": self.real_tokens, "slots": self.slots, "images_seen": self.images_seen}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.clip.load_state(state)
        v = state.get("varres")
        if v is not None:  # checkpoints of older versions also hold a "generator": no longer used
            self.real_tokens, self.slots, self.images_seen = (
                int(v[k]) for k in ("real_tokens", "slots", "images_seen"))

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        return self.clip.extra_modules()


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@register("task", "contrastive_varres", schema=ContrastiveEval)
def build_contrastive_varres(recipe: Recipe, run: RunDir) -> VarResTask:
    """Contrastive alignment on images of any size: NaViT packing, buckets, resolution curriculum."""
    return VarResTask(recipe, run)
