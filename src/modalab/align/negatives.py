"""Negative samplers (chapter 5.1.4) and the loss that uses the negatives they pick.

Every sampler has the same call::

    neg_idx = sampler.sample(sim, positive_index, num_negatives, mask=..., labels=...,
                             progress=..., generator=...)

- ``sim``: (B, N) current similarities of B anchors to N candidates (detached; higher = harder);
- ``positive_index``: (B,) column of each anchor's positive (``arange(B)`` for in-batch);
- ``mask``: optional (B, N) bool, True = false negative, never returned;
- ``labels``: optional (B,) anchor labels and ``candidate_labels`` (N,) (default: ``labels``);
- ``progress``: training progress in [0, 1] (step / total steps), used by schedules;
- returns (B, K) long candidate indices; a row with fewer than K valid candidates is padded
  with -1 (``sampled_info_nce`` ignores -1). The positive and masked columns are never returned.

Mixed, curriculum and semantic samplers turn a fractional count (K * ratio) into an integer per
row by stochastic rounding, so proportions are exact in expectation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from pydantic import Field, field_validator
from torch import Tensor

from modalab.constants import acc_dtype
from modalab.config import NamedBase
from modalab.registry import register

NEG_INF = float("-inf")


def _valid(sim: Tensor, positive_index: Tensor, mask: Tensor | None) -> Tensor:
    """(B, N) bool of candidates that may be returned."""
    b, n = sim.shape
    if positive_index.shape != (b,):
        raise ValueError(f"positive_index must be (B,) = ({b},), got {tuple(positive_index.shape)}")
    valid = torch.ones(b, n, dtype=torch.bool, device=sim.device)
    valid[torch.arange(b, device=sim.device), positive_index.long()] = False
    if mask is not None:
        if mask.shape != (b, n) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a (B, N) = ({b}, {n}) bool tensor, got {tuple(mask.shape)} {mask.dtype}"
            )
        valid &= ~mask
    return valid


def _rand(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    return torch.rand(shape, device=device, generator=generator)


def _round_counts(expected: Tensor, generator: torch.Generator | None) -> Tensor:
    """Stochastic rounding of non-negative (B,) expected counts to integers."""
    base = expected.floor()
    up = _rand(tuple(expected.shape), expected.device, generator) < (expected - base)
    return (base + up).long()


def _rank_within(keys: Tensor, allowed: Tensor) -> Tensor:
    """Rank (0 = highest key) of each allowed entry among its row's allowed entries. (B, N)"""
    k = keys.masked_fill(~allowed, NEG_INF)
    order = torch.sort(k, dim=1, descending=True, stable=True).indices  # (B, N)
    rank = torch.empty_like(order)
    ar = torch.arange(k.shape[1], device=k.device).expand_as(order)
    return rank.scatter_(1, order, ar)


def _to_indices(picked: Tensor, priority: Tensor, k: int) -> Tensor:
    """Indices of the picked entries of each row (at most k), highest priority first, -1 padded."""
    score = priority.masked_fill(~picked, NEG_INF)
    top = torch.topk(score, min(k, score.shape[1]), dim=1)  # (B, k)
    idx = top.indices.masked_fill(top.values == NEG_INF, -1)
    if idx.shape[1] < k:
        pad = idx.new_full((idx.shape[0], k - idx.shape[1]), -1)
        idx = torch.cat([idx, pad], dim=1)
    return idx


def _mix(
    sim: Tensor, valid: Tensor, n_hard: Tensor, k: int, generator: torch.Generator | None
) -> Tensor:
    """n_hard[b] hardest valid candidates of row b, then random valid ones up to k."""
    hard = valid & (_rank_within(sim.float(), valid) < n_hard[:, None])
    keys = _rand(tuple(sim.shape), sim.device, generator)
    return _to_indices(valid, torch.where(hard, keys + 2.0, keys), k)


class InBatchNegatives:
    """Uniformly random negatives among the valid candidates (the chapter's random sampling)."""

    def sample(
        self, sim: Tensor, positive_index: Tensor, num_negatives: int, *,
        mask: Tensor | None = None, generator: torch.Generator | None = None, **_: object,
    ) -> Tensor:
        valid = _valid(sim, positive_index, mask)
        return _to_indices(valid, _rand(tuple(sim.shape), sim.device, generator), num_negatives)


class HardNegatives:
    """Top-k most similar valid candidates; with ``temperature`` instead sampled without
    replacement with probability proportional to ``exp(sim / temperature)`` (BLIP-2 ITM style)."""

    def __init__(self, temperature: float | None = None) -> None:
        if temperature is not None and temperature <= 0:
            raise ValueError(f"HardNegatives: temperature must be > 0 or None, got {temperature}")
        self.temperature = temperature

    def sample(
        self, sim: Tensor, positive_index: Tensor, num_negatives: int, *,
        mask: Tensor | None = None, generator: torch.Generator | None = None, **_: object,
    ) -> Tensor:
        valid = _valid(sim, positive_index, mask)
        keys = sim.float()
        if self.temperature is not None:  # Gumbel-top-k = sampling without replacement
            u = _rand(tuple(sim.shape), sim.device, generator).clamp(min=1e-12)
            keys = keys / self.temperature - torch.log(-torch.log(u))
        return _to_indices(valid, keys, num_negatives)


class MixedNegatives:
    """``hard_fraction`` of the K negatives are the hardest, the rest uniformly random
    (default 20% hard / 80% random, the chapter's mix)."""

    def __init__(self, hard_fraction: float = 0.2) -> None:
        if not 0.0 <= hard_fraction <= 1.0:
            raise ValueError(f"MixedNegatives: hard_fraction must be in [0, 1], got {hard_fraction}")
        self.hard_fraction = hard_fraction

    def sample(
        self, sim: Tensor, positive_index: Tensor, num_negatives: int, *,
        mask: Tensor | None = None, generator: torch.Generator | None = None, **_: object,
    ) -> Tensor:
        valid = _valid(sim, positive_index, mask)
        expected = torch.full((sim.shape[0],), num_negatives * self.hard_fraction, device=sim.device)
        return _mix(sim, valid, _round_counts(expected, generator), num_negatives, generator)


class CurriculumNegatives:
    """Mixed sampling whose hard fraction follows a piecewise schedule over training progress.

    ``schedule``: ``[(progress_start, hard_fraction), ...]`` with increasing starts, the first at
    0. Piecewise constant by default (default 30% -> 50% -> 70% hard at 0, 1/3, 2/3: the chapter's
    70/30 -> 50/50 -> 30/70 easy:hard); ``interpolate=True`` makes it piecewise linear.
    """

    DEFAULT = ((0.0, 0.3), (1.0 / 3.0, 0.5), (2.0 / 3.0, 0.7))

    def __init__(
        self, schedule: Sequence[tuple[float, float]] = DEFAULT, interpolate: bool = False
    ) -> None:
        pts = [(float(p), float(f)) for p, f in schedule]
        if not pts or pts[0][0] != 0.0:
            raise ValueError(f"CurriculumNegatives: schedule must start at progress 0, got {pts}")
        if any(b[0] <= a[0] for a, b in zip(pts, pts[1:])):
            raise ValueError(f"CurriculumNegatives: schedule starts must increase, got {pts}")
        if any(not 0.0 <= f <= 1.0 for _, f in pts):
            raise ValueError(f"CurriculumNegatives: hard fractions must be in [0, 1], got {pts}")
        self.schedule = pts
        self.interpolate = interpolate

    def hard_fraction(self, progress: float) -> float:
        """Hard fraction at training progress in [0, 1] (step / total steps)."""
        i = max(j for j, (p, _) in enumerate(self.schedule) if p <= max(progress, 0.0))
        p0, f0 = self.schedule[i]
        if not self.interpolate or i + 1 == len(self.schedule):
            return f0
        p1, f1 = self.schedule[i + 1]
        return f0 + (f1 - f0) * (progress - p0) / (p1 - p0)

    def sample(
        self, sim: Tensor, positive_index: Tensor, num_negatives: int, *,
        mask: Tensor | None = None, progress: float = 0.0,
        generator: torch.Generator | None = None, **_: object,
    ) -> Tensor:
        return MixedNegatives(self.hard_fraction(progress)).sample(
            sim, positive_index, num_negatives, mask=mask, generator=generator
        )


Taxonomy = dict[int, tuple[str, str]]  # label -> (domain, fine-grained parent)


def load_taxonomy(source: str | Path | dict[Any, Any]) -> Taxonomy:
    """Read a label taxonomy: a JSON/YAML file (or a mapping) ``{label: [domain, parent]}`` or
    ``{label: {domain: ..., parent: ...}}``; labels are integer class ids."""
    if isinstance(source, dict):
        raw, where = source, "taxonomy"
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"taxonomy file not found: {path}")
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        where = str(path)
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: a taxonomy must map label -> [domain, parent]")
    out: Taxonomy = {}
    for key, val in raw.items():
        if isinstance(val, dict) and set(val) == {"domain", "parent"}:
            val = (val["domain"], val["parent"])
        if not isinstance(val, (list, tuple)) or len(val) != 2:
            raise ValueError(
                f"{where}: label {key!r} must map to [domain, parent] or {{domain:, parent:}}, got {val!r}"
            )
        try:
            out[int(key)] = (str(val[0]), str(val[1]))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: label {key!r} is not an integer class id") from None
    return out


def semantic_level(labels: Tensor, candidate_labels: Tensor, taxonomy: Taxonomy) -> Tensor:
    """(B, N) long: 0 same label, 3 same parent, 2 same domain, 1 unrelated.

    Raises if a label is missing from the taxonomy.
    """
    known = sorted(taxonomy)
    missing = set(labels.tolist()) | set(candidate_labels.tolist())
    missing -= set(known)
    if missing:
        raise ValueError(f"semantic_levels: labels {sorted(missing)} are not in the taxonomy")
    domains = {d: i for i, d in enumerate(sorted({d for d, _ in taxonomy.values()}))}
    parents = {p: i for i, p in enumerate(sorted({(d, p) for d, p in taxonomy.values()}))}
    dom = {lab: domains[d] for lab, (d, _) in taxonomy.items()}
    par = {lab: parents[(d, p)] for lab, (d, p) in taxonomy.items()}

    def lookup(x: Tensor, table: dict[int, int]) -> Tensor:
        return torch.tensor([table[v] for v in x.tolist()], device=x.device)

    a_dom, c_dom = lookup(labels, dom), lookup(candidate_labels, dom)
    a_par, c_par = lookup(labels, par), lookup(candidate_labels, par)
    level = torch.ones(labels.shape[0], candidate_labels.shape[0], dtype=torch.long, device=labels.device)
    level[a_dom[:, None] == c_dom[None, :]] = 2
    level[a_par[:, None] == c_par[None, :]] = 3
    level[labels[:, None] == candidate_labels[None, :]] = 0
    return level


class SemanticLevelNegatives:
    """Negatives drawn per semantic level with configured proportions.

    Level 1: unrelated domain; level 2: same domain, other parent; level 3: fine-grained sibling
    (same parent). Candidates with the anchor's own label are false negatives and never returned.
    Per row, the K slots are split among levels by a multinomial draw with ``proportions``; a
    level short of candidates passes its slots to the harder levels first (3, then 2, then 1).
    """

    def __init__(self, taxonomy: Taxonomy, proportions: Sequence[float] = (0.4, 0.3, 0.3)) -> None:
        if len(proportions) != 3 or any(p < 0 for p in proportions) or sum(proportions) <= 0:
            raise ValueError(
                f"SemanticLevelNegatives: proportions must be 3 non-negative numbers (levels 1, 2, 3), "
                f"got {list(proportions)}"
            )
        self.taxonomy = dict(taxonomy)
        total = float(sum(proportions))
        self.proportions = tuple(float(p) / total for p in proportions)

    def sample(
        self, sim: Tensor, positive_index: Tensor, num_negatives: int, *,
        mask: Tensor | None = None, labels: Tensor | None = None,
        candidate_labels: Tensor | None = None, generator: torch.Generator | None = None,
        **_: object,
    ) -> Tensor:
        if labels is None:
            raise ValueError("semantic_levels sampling needs the anchors' labels (labels=...)")
        cand = labels if candidate_labels is None else candidate_labels
        level = semantic_level(labels, cand, self.taxonomy)  # (B, N)
        valid = _valid(sim, positive_index, mask) & (level > 0)
        b = sim.shape[0]
        probs = torch.tensor(self.proportions, device=sim.device).expand(b, 3)
        draws = torch.multinomial(probs, num_negatives, replacement=True, generator=generator)
        want = torch.stack([(draws == j).sum(1) for j in range(3)], dim=1)  # (B, 3) levels 1..3
        avail = torch.stack([(valid & (level == j + 1)).sum(1) for j in range(3)], dim=1)
        take = torch.minimum(want, avail)
        short = num_negatives - take.sum(1)
        for j in (2, 1, 0):  # give missing slots to the hardest level that has spare candidates
            extra = torch.minimum(short, avail[:, j] - take[:, j])
            take[:, j] += extra
            short -= extra
        keys = _rand(tuple(sim.shape), sim.device, generator)
        picked = torch.zeros_like(valid)
        for j in range(3):
            allowed = valid & (level == j + 1)
            picked |= allowed & (_rank_within(keys, allowed) < take[:, j : j + 1])
        return _to_indices(picked, keys, num_negatives)


def sampled_info_nce(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor | float,
    neg_idx: Tensor,
    positive_index: Tensor | None = None,
) -> Tensor:
    """InfoNCE of each anchor against its positive and its sampled negatives (one direction).

    Row i: ``-log(e^{l_i,p(i)} / (e^{l_i,p(i)} + sum_k e^{l_i,neg_idx[i,k]}))`` with
    ``l = scale * image_emb @ text_emb.T``; -1 entries of ``neg_idx`` are ignored (a row with none
    gives 0). For the symmetric loss call it twice, e.g.
    ``0.5 * (sampled_info_nce(I, T, s, idx_i2t) + sampled_info_nce(T, I, s, idx_t2i))``.

    Args:
        image_emb: (B, D) anchors; text_emb: (N, D) candidates; logit_scale: scalar;
        neg_idx: (B, K) long candidate indices from a sampler, -1 = none;
        positive_index: (B,) column of each positive (default ``arange(B)``).
    Returns:
        scalar mean loss in the accumulation dtype.
    """
    b, n = image_emb.shape[0], text_emb.shape[0]
    if neg_idx.dim() != 2 or neg_idx.shape[0] != b:
        raise ValueError(f"sampled_info_nce: neg_idx must be (B, K) with B = {b}, got {tuple(neg_idx.shape)}")
    if positive_index is None:
        if n < b:
            raise ValueError(f"sampled_info_nce: {b} anchors but only {n} candidates; pass positive_index")
        positive_index = torch.arange(b, device=image_emb.device)
    dt = acc_dtype(image_emb, text_emb)
    img, txt = image_emb.to(dt), text_emb.to(dt)
    pos = logit_scale * (img * txt[positive_index.long()]).sum(dim=1)  # (B,)
    none = neg_idx < 0
    negs = txt[neg_idx.clamp(min=0)]  # (B, K, D)
    neg = (logit_scale * torch.einsum("bd,bkd->bk", img, negs)).masked_fill(none, NEG_INF)
    rows = torch.logsumexp(torch.cat([pos[:, None], neg], dim=1), dim=1) - pos  # (B,)
    return rows.mean()


# ------------------------------------------------------------------------ registered builders


class InBatchConfig(NamedBase):
    pass


class HardConfig(NamedBase):
    temperature: float | None = Field(
        None, gt=0, description="None: top-k; else sample proportional to exp(sim / temperature)"
    )


class MixedConfig(NamedBase):
    hard_fraction: float = Field(0.2, ge=0, le=1, description="share of hard negatives (rest random)")


class CurriculumConfig(NamedBase):
    schedule: list[tuple[float, float]] = Field(
        default_factory=lambda: [tuple(p) for p in CurriculumNegatives.DEFAULT],
        description="[[progress_start, hard_fraction], ...], first start 0",
    )
    interpolate: bool = False

    @field_validator("schedule")
    @classmethod
    def _check(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        CurriculumNegatives(v)  # raises with a message naming the problem
        return v


class SemanticLevelsConfig(NamedBase):
    taxonomy: str | dict[int, tuple[str, str]] = Field(
        description="path to a JSON/YAML file {label: [domain, parent]}, or the mapping itself"
    )
    proportions: tuple[float, float, float] = Field(
        (0.4, 0.3, 0.3), description="share of level 1 (unrelated), 2 (same domain), 3 (sibling)"
    )


@register("negatives", "in_batch", schema=InBatchConfig)
def build_in_batch(cfg: InBatchConfig) -> InBatchNegatives:
    """Uniformly random negatives among the valid candidates."""
    return InBatchNegatives()


@register("negatives", "hard", schema=HardConfig)
def build_hard(cfg: HardConfig) -> HardNegatives:
    """Hardest negatives: top-k by current similarity (or softmax-sampled with a temperature)."""
    return HardNegatives(cfg.temperature)


@register("negatives", "mixed", schema=MixedConfig)
def build_mixed(cfg: MixedConfig) -> MixedNegatives:
    """A fixed share of hard negatives, the rest random (default 20% hard / 80% random)."""
    return MixedNegatives(cfg.hard_fraction)


@register("negatives", "curriculum", schema=CurriculumConfig)
def build_curriculum(cfg: CurriculumConfig) -> CurriculumNegatives:
    """Hard share following a schedule over training (default 30% -> 50% -> 70% hard)."""
    return CurriculumNegatives(cfg.schedule, cfg.interpolate)


@register("negatives", "semantic_levels", schema=SemanticLevelsConfig)
def build_semantic_levels(cfg: SemanticLevelsConfig) -> SemanticLevelNegatives:
    """Negatives per semantic level (unrelated / same domain / sibling) from a label taxonomy."""
    return SemanticLevelNegatives(load_taxonomy(cfg.taxonomy), cfg.proportions)
