"""Registered objectives for the extended losses: thin ``nn.Module`` wrappers.

They share the call of ``align/objectives_clip.py``::

    loss = objective(image_emb, text_emb, logit_scale=..., logit_bias=..., labels=...)

With ``mask_same_label: true`` in the recipe, ``labels`` (B,) build the false-negative mask
(pairs with the same label are dropped from the negatives). Extra, optional inputs:

- ``multi_granularity`` takes the region and token inputs of ``multi_granularity_terms`` as
  keywords (levels without inputs are skipped);
- ``sampled_info_nce`` reads the training progress set by ``set_progress(step / total_steps)``;
- ``queue_info_nce`` takes ``ids`` (B,) long sample ids (see ``queue.sample_ids``) and optional
  ``image_keys`` / ``text_keys`` (momentum-encoder features) to enqueue; in training mode it
  enqueues the batch after computing the loss.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from modalab import registry
from modalab.align.losses import (
    hard_negative_info_nce,
    hcl_info_nce,
    label_targets,
    same_label_mask,
    soft_label_info_nce,
)
from modalab.align.fine_grained import multi_granularity_loss
from modalab.align.negatives import sampled_info_nce
from modalab.align.queue import NegativeQueue, queue_info_nce
from modalab.config import LossBase
from modalab.registry import register


class _Objective(nn.Module):
    uses_bias = False

    def __init__(self, mask_same_label: bool = False) -> None:
        super().__init__()
        self.mask_same_label = mask_same_label

    def _mask(self, labels: Tensor | None) -> Tensor | None:
        return same_label_mask(labels) if (self.mask_same_label and labels is not None) else None


class HardNegativeInfoNCE(_Objective):
    """InfoNCE with the k hardest in-batch negatives: alone (``only``) or added to the in-batch
    softmax a second time (``added``, weight ``weight``)."""

    def __init__(self, k: int = 10, mask_same_label: bool = False, mode: str = "only",
                 weight: float = 1.0) -> None:
        super().__init__(mask_same_label)
        self.k, self.mode, self.weight = k, mode, weight

    def forward(self, image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor,
                logit_bias: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        return hard_negative_info_nce(image_emb, text_emb, logit_scale, self.k, mask=self._mask(labels),
                                      mode=self.mode, weight=self.weight)


class HCLInfoNCE(_Objective):
    """Hardness-weighted InfoNCE (HCL, Robinson et al. 2021)."""

    def __init__(self, beta: float = 1.0, tau_plus: float = 0.0, mask_same_label: bool = False) -> None:
        super().__init__(mask_same_label)
        self.beta, self.tau_plus = beta, tau_plus

    def forward(self, image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor,
                logit_bias: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        return hcl_info_nce(image_emb, text_emb, logit_scale, self.beta, self.tau_plus,
                            mask=self._mask(labels))


class SoftLabelInfoNCE(_Objective):
    """Soft-target InfoNCE: label smoothing, or mass shared among same-label items."""

    def __init__(self, smoothing: float = 0.1, targets: str = "onehot", mask_same_label: bool = False) -> None:
        super().__init__(mask_same_label)
        self.smoothing, self.targets = smoothing, targets

    def forward(self, image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor,
                logit_bias: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        targets = None
        if self.targets == "label":
            if labels is None:
                raise ValueError("soft_label_info_nce with targets: label needs batch labels")
            targets = label_targets(labels)
        return soft_label_info_nce(image_emb, text_emb, logit_scale, targets,
                                   smoothing=self.smoothing, mask=self._mask(labels))


class MultiGranularity(_Objective):
    """Weighted global + regional + token-level (FILIP) contrastive loss."""

    takes_regions = True  # the task passes region/phrase embeddings where the data has boxes

    def __init__(self, weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 mask_same_label: bool = False) -> None:
        super().__init__(mask_same_label)
        self.weights = tuple(weights)
        self.needs_tokens = self.weights[2] > 0  # the task passes image/text token embeddings

    def forward(self, image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor,
                logit_bias: Tensor | None = None, labels: Tensor | None = None,
                **levels: Tensor | None) -> Tensor:
        return multi_granularity_loss(image_emb, text_emb, logit_scale, weights=self.weights,
                                      mask=self._mask(labels), **levels)


class SampledInfoNCE(_Objective):
    """Symmetric InfoNCE over the positive and ``num_negatives`` negatives picked by a sampler
    from the batch (image->text on ``sim``, text->image on ``sim.T``)."""

    def __init__(self, sampler: Any, num_negatives: int = 16, mask_same_label: bool = False) -> None:
        super().__init__(mask_same_label)
        self.sampler, self.num_negatives = sampler, num_negatives
        self.progress = 0.0

    def set_progress(self, progress: float) -> None:
        """Training progress in [0, 1] (step / total steps), read by curriculum samplers."""
        self.progress = float(progress)

    def forward(self, image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor,
                logit_bias: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        sim = (image_emb.detach().float() @ text_emb.detach().float().T)  # (B, B)
        mask = self._mask(labels)
        pos = torch.arange(sim.shape[0], device=sim.device)
        kw = dict(labels=labels, progress=self.progress)
        i2t = self.sampler.sample(sim, pos, self.num_negatives, mask=mask, **kw)
        t2i = self.sampler.sample(sim.T, pos, self.num_negatives,
                                  mask=None if mask is None else mask.T, **kw)
        return 0.5 * (sampled_info_nce(image_emb, text_emb, logit_scale, i2t)
                      + sampled_info_nce(text_emb, image_emb, logit_scale, t2i))


class QueueInfoNCE(_Objective):
    """InfoNCE with MoCo-style queues of past image and text embeddings as extra negatives.

    The queues are created at the first call (their width is the embedding width) and live in
    this module's state_dict, so they are checkpointed with the objective (``stateful``: the task
    restores it on resume even before the first call has created them). With ``image_keys`` /
    ``text_keys`` from a momentum encoder (``model.momentum``) the batch's keys are both the
    candidates of the loss and what is enqueued (see :func:`queue_info_nce`).
    """

    stateful = True
    wants_keys = True  # the task passes momentum-encoder keys when the recipe has one

    def __init__(self, size: int = 65536, mask_same_label: bool = False) -> None:
        super().__init__(mask_same_label)
        self.size = size
        self.image_queue: NegativeQueue | None = None
        self.text_queue: NegativeQueue | None = None

    def _make(self, dim: int) -> None:
        self.image_queue = NegativeQueue(self.size, dim)
        self.text_queue = NegativeQueue(self.size, dim)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        key = prefix + "image_queue.queue"
        if self.image_queue is None and key in state_dict:
            self._make(state_dict[key].shape[1])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor,
                logit_bias: Tensor | None = None, labels: Tensor | None = None,
                ids: Tensor | None = None, image_keys: Tensor | None = None,
                text_keys: Tensor | None = None) -> Tensor:
        if self.image_queue is None:
            self._make(image_emb.shape[1])
        assert self.image_queue is not None and self.text_queue is not None
        if self.image_queue.queue.device != image_emb.device:  # created, or restored, elsewhere
            self.to(image_emb.device)
        q_labels = labels if self.mask_same_label else None
        q_mask = self.image_queue.exclusion_mask(ids=ids, labels=q_labels)
        # snapshot the queues: the enqueue below writes into the same storage that backward reads
        loss = queue_info_nce(image_emb, text_emb, logit_scale, self.text_queue.features().clone(),
                              self.image_queue.features().clone(), mask=self._mask(labels),
                              queue_mask=q_mask, image_keys=image_keys, text_keys=text_keys)
        if self.training:
            keys_i = image_emb if image_keys is None else image_keys
            keys_t = text_emb if text_keys is None else text_keys
            self.image_queue.enqueue(keys_i.detach(), ids=ids, labels=labels)
            self.text_queue.enqueue(keys_t.detach(), ids=ids, labels=labels)
        return loss


# ------------------------------------------------------------------------------- schemas


class _MaskedLoss(LossBase):
    mask_same_label: bool = Field(False, description="drop same-label pairs from the negatives")


class HardNegativeConfig(_MaskedLoss):
    k: int = Field(10, ge=1, description="hardest negatives per row")
    mode: Literal["only", "added"] = Field(
        "only", description="only: positive + k hardest (collapses from scratch); added: the k hardest "
        "enter the full in-batch softmax once more (NegCLIP style)"
    )
    weight: float = Field(1.0, gt=0, description="added: extra weight of each mined negative")


class HCLConfig(_MaskedLoss):
    beta: float = Field(1.0, ge=0, description="hardness concentration (0 = plain InfoNCE)")
    tau_plus: float = Field(0.0, ge=0, lt=1, description="positive-class prior for debiasing")


class SoftLabelConfig(_MaskedLoss):
    smoothing: float = Field(0.1, ge=0, lt=1)
    targets: Literal["onehot", "label"] = Field(
        "onehot", description="label: the positive mass is shared among same-label items"
    )

    @model_validator(mode="after")
    def _no_conflict(self) -> "SoftLabelConfig":
        if self.targets == "label" and self.mask_same_label:
            raise ValueError("targets: label and mask_same_label: true contradict each other; pick one")
        return self


class MultiGranularityConfig(_MaskedLoss):
    global_weight: float = Field(1.0, ge=0)
    regional_weight: float = Field(1.0, ge=0)
    token_weight: float = Field(1.0, ge=0)


class SampledConfig(_MaskedLoss):
    negatives: dict[str, Any] = Field(
        default_factory=lambda: {"name": "mixed"}, description="a negatives sampler section"
    )
    num_negatives: int = Field(16, ge=1)

    @field_validator("negatives")
    @classmethod
    def _sampler(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "name" not in v:
            raise ValueError(f"needs 'name', one of: {', '.join(registry.names('negatives'))}")
        try:
            entry = registry.get("negatives", str(v["name"]))
        except registry.RegistryError as e:
            raise ValueError(str(e)) from None
        return entry.schema.model_validate(v).model_dump() if entry.schema else v


class QueueConfig(_MaskedLoss):
    size: int = Field(65536, ge=1, description="rows in each queue (MoCo: 65,536)")


@register("loss", "hard_negative_info_nce", schema=HardNegativeConfig)
def build_hard_negative(cfg: HardNegativeConfig) -> nn.Module:
    """InfoNCE with the top-k hardest in-batch negatives: alone, or added to the in-batch softmax."""
    return HardNegativeInfoNCE(cfg.k, cfg.mask_same_label, cfg.mode, cfg.weight)


@register("loss", "hcl_info_nce", schema=HCLConfig)
def build_hcl(cfg: HCLConfig) -> nn.Module:
    """Hardness-weighted InfoNCE (HCL, importance weights exp(beta * logit))."""
    return HCLInfoNCE(cfg.beta, cfg.tau_plus, cfg.mask_same_label)


@register("loss", "soft_label_info_nce", schema=SoftLabelConfig)
def build_soft_label(cfg: SoftLabelConfig) -> nn.Module:
    """Cross-entropy against soft targets (label smoothing or same-label sharing)."""
    return SoftLabelInfoNCE(cfg.smoothing, cfg.targets, cfg.mask_same_label)


@register("loss", "multi_granularity", schema=MultiGranularityConfig)
def build_multi_granularity(cfg: MultiGranularityConfig) -> nn.Module:
    """Weighted global + regional + FILIP token-level contrastive loss."""
    weights = (cfg.global_weight, cfg.regional_weight, cfg.token_weight)
    return MultiGranularity(weights, cfg.mask_same_label)


@register("loss", "sampled_info_nce", schema=SampledConfig)
def build_sampled(cfg: SampledConfig) -> nn.Module:
    """InfoNCE over sampled in-batch negatives (random / hard / mixed / curriculum / semantic)."""
    entry = registry.get("negatives", cfg.negatives["name"])
    section = entry.schema.model_validate(cfg.negatives) if entry.schema else cfg.negatives
    return SampledInfoNCE(entry.builder(section), cfg.num_negatives, cfg.mask_same_label)


@register("loss", "queue_info_nce", schema=QueueConfig)
def build_queue(cfg: QueueConfig) -> nn.Module:
    """InfoNCE with cross-batch queues of past embeddings as extra negatives (MoCo style)."""
    return QueueInfoNCE(cfg.size, cfg.mask_same_label)
