"""``AlignmentMonitor``: geometry metrics and health warnings for a contrastive run.

Called every N steps on a fixed validation subset::

    monitor = AlignmentMonitor(embed_dim=D)
    metrics, warnings = monitor(image_emb, text_emb, labels, logit_scale=s, grad_norm=g)

``metrics`` is a flat ``{name: float}`` dict for metrics.jsonl (keys prefixed ``monitor/``);
``warnings`` are sentences for the log. Warnings raised:

- collapse: a modality's effective rank is below ``min_rank_fraction * D``, or its mean
  per-dimension std is ~0 (constant embeddings);
- drifting modalities: the modality gap exceeds ``gap_factor`` times its first measured value
  (at least ``gap_floor``, so a tiny first gap does not make every change an alarm);
- temperature: tau = 1 / logit_scale outside ``tau_range`` (the chapter's [0.01, 0.1]);
- clamp: the logit scale at its clamp ``max_logit_scale`` (open_clip clamps 1/tau to 100).

The first gap is state: keep ``state_dict()`` with checkpoints so a resumed run compares with the
same reference.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from modalab.constants import TAU_RANGE
from modalab.eval.geometry import (
    alignment,
    effective_rank,
    modality_gap,
    per_dim_std,
    similarity_distribution,
    uniformity,
)


class MonitorResult(NamedTuple):
    metrics: dict[str, float]
    warnings: list[str]


class AlignmentMonitor:
    """Computes alignment-health metrics and warnings (see the module docstring).

    Args:
        min_rank_fraction: collapse when effective rank < this fraction of D.
        gap_factor, gap_floor: drift when gap > gap_factor * max(first gap, gap_floor).
        tau_range: allowed (min, max) temperature; max_logit_scale: the clamp of 1/tau.
        quantiles: similarity quantiles logged; prefix: metric key prefix.
    """

    def __init__(
        self,
        min_rank_fraction: float = 0.05,
        gap_factor: float = 1.5,
        gap_floor: float = 0.1,
        tau_range: tuple[float, float] = TAU_RANGE,
        max_logit_scale: float = 100.0,
        quantiles: Sequence[float] = (0.05, 0.5, 0.95),
        prefix: str = "monitor/",
    ) -> None:
        if not 0.0 <= min_rank_fraction <= 1.0:
            raise ValueError(f"AlignmentMonitor: min_rank_fraction must be in [0, 1], got {min_rank_fraction}")
        if gap_factor <= 1.0:
            raise ValueError(f"AlignmentMonitor: gap_factor must be > 1, got {gap_factor}")
        self.min_rank_fraction = min_rank_fraction
        self.gap_factor, self.gap_floor = gap_factor, gap_floor
        self.tau_range, self.max_logit_scale = tau_range, max_logit_scale
        self.quantiles, self.prefix = tuple(quantiles), prefix
        self.first_gap: float | None = None

    def state_dict(self) -> dict[str, float | None]:
        return {"first_gap": self.first_gap}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.first_gap = state.get("first_gap")

    @torch.no_grad()
    def __call__(
        self,
        image_emb: Tensor,
        text_emb: Tensor,
        labels: Tensor | None = None,
        *,
        logit_scale: Tensor | float | None = None,
        grad_norm: Tensor | float | None = None,
    ) -> MonitorResult:
        """Metrics and warnings for (N, D) paired embeddings (N >= 2) and optional (N,) labels."""
        if image_emb.shape != text_emb.shape or image_emb.dim() != 2 or image_emb.shape[0] < 2:
            raise ValueError(
                f"AlignmentMonitor expects two (N, D) tensors with N >= 2, got "
                f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
            )
        d = image_emb.shape[1]
        m: dict[str, float] = {}
        warnings: list[str] = []

        dist = similarity_distribution(image_emb, text_emb, labels, self.quantiles, bins=10)
        for side in ("pos", "neg"):
            for q, v in dist[f"{side}_q"].items():  # type: ignore[union-attr]
                m[f"sim_{side}_q{q}"] = v
        m["sim_pos_mean"], m["sim_neg_mean"] = dist["pos_mean"], dist["neg_mean"]  # type: ignore[assignment]
        m["sim_margin"] = dist["margin"]  # type: ignore[assignment]

        for name, x in (("image", image_emb), ("text", text_emb)):
            er = effective_rank(x)
            std = per_dim_std(x)
            m[f"erank_{name}"] = er
            m[f"erank_{name}_frac"] = er / d
            m[f"std_{name}_mean"] = float(std.mean())
            m[f"std_{name}_min"] = float(std.min())
            if er < self.min_rank_fraction * d or float(std.mean()) < 1e-6:
                warnings.append(
                    f"{name} embeddings look collapsed: effective rank {er:.2f} < "
                    f"{self.min_rank_fraction} x D={d} ({self.min_rank_fraction * d:.2f}), "
                    f"mean per-dimension std {float(std.mean()):.2e}"
                )

        gap = modality_gap(image_emb, text_emb)
        if self.first_gap is None:
            self.first_gap = gap
        ref = max(self.first_gap, self.gap_floor)
        m["modality_gap"] = gap
        m["modality_gap_ratio"] = gap / ref
        if gap > self.gap_factor * ref:
            warnings.append(
                f"the modalities drift apart: modality gap {gap:.3f} > {self.gap_factor} x "
                f"reference {ref:.3f} (first value {self.first_gap:.3f})"
            )

        m["alignment"] = alignment(image_emb, text_emb)
        m["uniformity_image"] = uniformity(image_emb)
        m["uniformity_text"] = uniformity(text_emb)

        if logit_scale is not None:
            scale = float(logit_scale)
            tau = 1.0 / scale
            m["logit_scale"], m["tau"] = scale, tau
            lo, hi = self.tau_range
            if not lo <= tau <= hi:
                warnings.append(f"tau={tau:.4f} is outside [{lo}, {hi}] (logit scale {scale:.2f})")
            if scale >= self.max_logit_scale * (1 - 1e-4):
                warnings.append(f"the logit scale is at its clamp ({scale:.2f} >= {self.max_logit_scale})")
        if grad_norm is not None:
            m["grad_norm"] = float(grad_norm)

        return MonitorResult({self.prefix + k: v for k, v in m.items()}, warnings)

    @torch.no_grad()
    def histograms(self, image_emb: Tensor, text_emb: Tensor, labels: Tensor | None = None,
                   bins: int = 50) -> dict[str, list]:
        """Histogram data for report.html: ``{"edges", "pos", "neg"}``."""
        return similarity_distribution(  # type: ignore[return-value]
            image_emb, text_emb, labels, self.quantiles, bins)["hist"]
