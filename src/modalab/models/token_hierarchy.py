"""A MusicLM-style two-stage token model (chapter 5.3: hierarchical audio tokens).

MusicLM (Agostinelli et al. 2023) generates in stages: a *semantic* stage models k-means tokens of
a self-supervised encoder at a low rate, conditioned on the text's MuLan tokens; an *acoustic*
stage models the codec's RVQ tokens conditioned on the text and the semantic tokens; the codec
decodes. Here the condition is a class label, and each stage is a decoder-only transformer over
one flat sequence (the layout MusicLM's coarse acoustic stage uses, levels interleaved per frame):

    semantic stage:  [c] s_1 .. s_S                          loss on s_1 .. s_S
    acoustic stage:  [c] s_1 .. s_S [sep] a_1^1 .. a_1^Q a_2^1 .. a_T^Q   loss on the a's

Shared vocabulary of both stages: ``n_classes`` condition ids, ``n_semantic`` semantic ids, one
separator, ``n_q * n_acoustic`` acoustic ids (level ``l`` code ``k`` -> ``l * n_acoustic + k``),
so a level's codes never share an embedding with another level's. Sampling masks the logits to
the ids allowed at each position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from modalab.config import NamedBase
from modalab.layers.block import Transformer
from modalab.registry import register


class CausalTokenLM(nn.Module):
    """Token ids (B, N) -> next-token logits (B, N, vocab): embeddings + learned positions ->
    causal pre-norm transformer -> LayerNorm -> linear head."""

    def __init__(self, vocab: int, max_len: int, dim: int = 64, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.vocab, self.max_len = vocab, max_len
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = Transformer(dim, depth, heads)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: Tensor) -> Tensor:
        if ids.shape[1] > self.max_len:
            raise ValueError(f"CausalTokenLM: sequence of {ids.shape[1]} tokens, max_len {self.max_len}")
        x = self.embed(ids) + self.pos[: ids.shape[1]]  # (B, N, D)
        return self.head(self.norm(self.blocks(x, is_causal=True)))  # (B, N, vocab)


class TwoStageTokenLM(nn.Module):
    """Semantic stage + acoustic stage over the shared vocabulary of the module docstring.

    Args:
        n_classes, n_semantic, n_acoustic, n_q: condition ids, semantic codebook size, codec
            codebook size, RVQ levels modelled.
        sem_len, frames: semantic tokens and codec frames per clip (fix the stages' lengths).
        semantic, acoustic: the two stages' LMs (injected; :func:`build_two_stage` makes them).
    """

    def __init__(self, n_classes: int, n_semantic: int, n_acoustic: int, n_q: int, sem_len: int, frames: int,
                 semantic: nn.Module, acoustic: nn.Module) -> None:
        super().__init__()
        self.n_classes, self.n_semantic, self.n_acoustic, self.n_q = n_classes, n_semantic, n_acoustic, n_q
        self.sem_len, self.frames = sem_len, frames
        self.sem_off = n_classes
        self.sep = n_classes + n_semantic
        self.ac_off = self.sep + 1
        self.vocab = self.ac_off + n_q * n_acoustic
        self.semantic, self.acoustic = semantic, acoustic

    # sequence layout --------------------------------------------------------------------------
    def semantic_ids(self, labels: Tensor, sem: Tensor) -> Tensor:
        """labels (B,), sem (B, S) -> (B, 1 + S)."""
        return torch.cat([labels[:, None], sem + self.sem_off], 1)

    def acoustic_ids(self, labels: Tensor, sem: Tensor, ac: Tensor) -> Tensor:
        """labels (B,), sem (B, S), ac (B, T, Q) -> (B, 2 + S + T * Q), levels interleaved per frame."""
        level = torch.arange(ac.shape[2], device=ac.device) * self.n_acoustic  # (Q,)
        flat = (ac + level + self.ac_off).flatten(1)  # (B, T * Q)
        sep = torch.full_like(labels[:, None], self.sep)
        return torch.cat([self.semantic_ids(labels, sem), sep, flat], 1)

    def _check(self, labels: Tensor, sem: Tensor, ac: Tensor | None = None) -> None:
        if sem.shape[1:] != (self.sem_len,):
            raise ValueError(f"TwoStageTokenLM: semantic tokens {tuple(sem.shape)}, expected (B, {self.sem_len})")
        if ac is not None and ac.shape[1:] != (self.frames, self.n_q):
            raise ValueError(f"TwoStageTokenLM: acoustic tokens {tuple(ac.shape)}, "
                             f"expected (B, {self.frames}, {self.n_q})")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.n_classes):
            raise ValueError(f"TwoStageTokenLM: labels outside [0, {self.n_classes})")

    # training ---------------------------------------------------------------------------------
    def stage_losses(self, labels: Tensor, sem: Tensor, ac: Tensor) -> tuple[Tensor, Tensor]:
        """Mean next-token cross-entropy (nats) of the semantic stage on its S tokens and of the
        acoustic stage on its T * Q tokens (teacher forcing)."""
        self._check(labels, sem, ac)
        ids_s = self.semantic_ids(labels, sem)  # (B, 1 + S)
        logits_s = self.semantic(ids_s[:, :-1])  # predicts positions 1..S
        loss_s = F.cross_entropy(logits_s.flatten(0, 1), ids_s[:, 1:].flatten())
        ids_a = self.acoustic_ids(labels, sem, ac)  # (B, 2 + S + T * Q)
        start = 2 + self.sem_len  # first acoustic position
        logits_a = self.acoustic(ids_a[:, :-1])[:, start - 1:]  # (B, T * Q, vocab)
        loss_a = F.cross_entropy(logits_a.flatten(0, 1), ids_a[:, start:].flatten())
        return loss_s, loss_a

    # generation -------------------------------------------------------------------------------
    @staticmethod
    def _sample(logits: Tensor, lo: int, hi: int, temperature: float, gen: torch.Generator | None) -> Tensor:
        """Sample ids in [lo, hi) from logits (B, vocab); temperature 0 takes the argmax."""
        sub = logits[:, lo:hi].float()
        if temperature <= 0:
            return sub.argmax(-1) + lo
        probs = torch.softmax(sub / temperature, -1)
        return torch.multinomial(probs, 1, generator=gen)[:, 0] + lo

    @torch.no_grad()
    def generate(self, labels: Tensor, temperature: float = 1.0,
                 gen: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """labels (B,) -> (semantic tokens (B, S), acoustic codes (B, T, Q)), stage by stage."""
        self._check(labels, torch.zeros(labels.shape[0], self.sem_len, dtype=torch.long))
        ids = labels[:, None]
        for _ in range(self.sem_len):
            nxt = self._sample(self.semantic(ids)[:, -1], self.sem_off, self.sep, temperature, gen)
            ids = torch.cat([ids, nxt[:, None]], 1)
        sem = ids[:, 1:] - self.sem_off  # (B, S)
        ids = torch.cat([ids, torch.full_like(labels[:, None], self.sep)], 1)
        for t in range(self.frames * self.n_q):
            lo = self.ac_off + (t % self.n_q) * self.n_acoustic
            nxt = self._sample(self.acoustic(ids)[:, -1], lo, lo + self.n_acoustic, temperature, gen)
            ids = torch.cat([ids, nxt[:, None]], 1)
        flat = ids[:, 2 + self.sem_len:] - self.ac_off  # (B, T * Q)
        ac = flat.view(-1, self.frames, self.n_q) - torch.arange(self.n_q, device=flat.device) * self.n_acoustic
        return sem, ac


def build_two_stage(n_classes: int, n_semantic: int, n_acoustic: int, n_q: int, sem_len: int, frames: int,
                    dim: int = 64, depth: int = 2, heads: int = 4) -> TwoStageTokenLM:
    """Both stages as :class:`CausalTokenLM` of the same size over the shared vocabulary."""
    vocab = n_classes + n_semantic + 1 + n_q * n_acoustic
    sem_lm = CausalTokenLM(vocab, 1 + sem_len, dim, depth, heads)
    ac_lm = CausalTokenLM(vocab, 2 + sem_len + frames * n_q, dim, depth, heads)
    return TwoStageTokenLM(n_classes, n_semantic, n_acoustic, n_q, sem_len, frames, sem_lm, ac_lm)


# ---------------------------------------------------------------------------------- builders


class TokenHierarchyConfig(NamedBase):
    """The two-stage LM and the parts the task ``audio_tokens_hierarchy`` trains before it."""

    dim: int = Field(64, gt=0)
    depth: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)
    semantic_codes: int = Field(32, gt=1, description="k of the k-means semantic tokeniser")
    acoustic_levels: int = Field(2, gt=0, description="RVQ levels the acoustic stage models (<= codec_levels)")
    codec_channels: int = Field(8, gt=0)
    codec_dim: int = Field(32, gt=0)
    codec_levels: int = Field(8, gt=0)
    codec_codebook: int = Field(64, gt=1)
    codec_steps: int = Field(300, ge=0, description="codec training steps (run before the LM)")
    codec_warmup_steps: int = Field(0, ge=0, description="first codec steps with the RVQ bypassed")
    codec_init_frames: int = Field(0, ge=0, description="k-means start of all RVQ levels on about this many "
                                   "encoder frames at the first quantised step (0: lazy per-level start)")
    codec_quant_lr_scale: float = Field(1.0, gt=0, description="learning rate of the quantised codec steps = "
                                        "codec_lr * this")
    codec_crop: int = Field(0, ge=0, description="codec training crop in samples (0: whole clips)")
    codec_decay: float = Field(0.99, ge=0, lt=1, description="EMA decay of the codec's RVQ codebooks")
    codec_lr: float = Field(3e-3, gt=0)
    codec_batch: int = Field(8, gt=0)
    codec_wave_weight: float = Field(1.0, ge=0, description="weight of the waveform term (see codec_train)")
    codec_stft_weight: float = Field(1.0, ge=0, description="weight of the multi-resolution STFT term")
    encoder_steps: int = Field(200, ge=0, description="steps of the semantic encoder and of the judge "
                               "classifier (each an EventCNN trained on the real clips' labels)")
    encoder_lr: float = Field(3e-3, gt=0)
    n_mels: int = Field(64, gt=0)


@register("model", "token_hierarchy", schema=TokenHierarchyConfig)
def build_token_hierarchy(cfg: TokenHierarchyConfig, *, n_classes: int, sem_len: int, frames: int) -> TwoStageTokenLM:
    """MusicLM-style semantic + acoustic causal LMs over a shared vocabulary (class-conditioned)."""
    if cfg.acoustic_levels > cfg.codec_levels:
        raise ValueError(f"model.acoustic_levels={cfg.acoustic_levels} exceeds model.codec_levels={cfg.codec_levels}")
    return build_two_stage(n_classes, cfg.semantic_codes, cfg.codec_codebook, cfg.acoustic_levels, sem_len, frames,
                           cfg.dim, cfg.depth, cfg.heads)


class TwoStageLossConfig(NamedBase):
    semantic_weight: float = Field(1.0, ge=0)
    acoustic_weight: float = Field(1.0, ge=0)


class TwoStageLoss(nn.Module):
    """``semantic_weight * CE_semantic + acoustic_weight * CE_acoustic`` of the two stages."""

    def __init__(self, semantic_weight: float = 1.0, acoustic_weight: float = 1.0) -> None:
        super().__init__()
        self.semantic_weight, self.acoustic_weight = semantic_weight, acoustic_weight

    def forward(self, loss_s: Tensor, loss_a: Tensor) -> Tensor:
        return self.semantic_weight * loss_s + self.acoustic_weight * loss_a


@register("loss", "two_stage_ce", schema=TwoStageLossConfig)
def build_two_stage_ce(cfg: TwoStageLossConfig) -> TwoStageLoss:
    """Weighted sum of the semantic and acoustic stages' next-token cross-entropies."""
    return TwoStageLoss(cfg.semantic_weight, cfg.acoustic_weight)
