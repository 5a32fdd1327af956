"""Mixture of modality experts (VLMo MoME) and a learned top-k router (Switch Transformer).

MoME block: self-attention shared by all tokens, then one feed-forward expert per modality; each
token goes to its modality's expert (``modality_ids`` (B, N)). Blocks built with a joint expert
(VLMo's VL-FFN, used in the top layers) send every token of a multimodal sample to it instead;
single-modality samples keep their own experts.

Routed block: the same shared attention, then ``RoutedFFN``: a linear router picks the top-k of
``num_experts`` FFNs per token from the token itself (modality ignored), with the Switch
load-balancing loss ``E * sum_i f_i * P_i`` (f_i: share of assignments to expert i, P_i: mean router
probability of expert i; 1.0 when balanced). No capacity limit: every token is processed.

Both blocks: ``block(x, modality_ids, key_mask) -> (x, aux_loss)``; padded tokens are excluded from
attention keys and from the load-balancing statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from modalab.layers import Mlp, multi_head_attention, register_block


def ffn(dim: int, mlp_ratio: int = 4) -> Mlp:
    """One expert: ``layers.Mlp`` (Linear -> GELU -> Linear), which also loads the ``0.*`` / ``2.*``
    keys of the ``nn.Sequential`` experts written before it (same initial draws, same outputs)."""
    return Mlp(dim, dim * mlp_ratio)


def dispatch(x: Tensor, expert_ids: Tensor, experts: Sequence[nn.Module]) -> Tensor:
    """Run each token through ``experts[expert_ids[token]]``. x (B, N, D), ids (B, N) -> (B, N, D)."""
    out = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        sel = expert_ids == e  # (B, N)
        if bool(sel.any()):
            out[sel] = expert(x[sel]).to(out.dtype)  # (n_e, D)
    return out


@register_block
class MoMEBlock(nn.Module):
    """Shared attention, per-modality FFN experts, optional joint expert.

    Args:
        dim, heads: sizes.
        num_modalities: one expert per modality id 0..num_modalities-1.
        joint_expert: add the VL expert used for multimodal samples (VLMo top layers).
    """

    def __init__(self, dim: int, heads: int, num_modalities: int, joint_expert: bool = False,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = multi_head_attention(dim, heads, bias=True)
        self.norm2 = nn.LayerNorm(dim)
        self.experts = nn.ModuleList(ffn(dim, mlp_ratio) for _ in range(num_modalities))
        self.joint = ffn(dim, mlp_ratio) if joint_expert else None
        self.num_modalities = num_modalities

    def expert_ids(self, modality_ids: Tensor, key_mask: Tensor | None) -> Tensor:
        """(B, N) modality ids -> (B, N) expert index; the joint expert is ``num_modalities``."""
        if self.joint is None:
            return modality_ids
        real = key_mask if key_mask is not None else torch.ones_like(modality_ids, dtype=torch.bool)
        big = torch.iinfo(modality_ids.dtype).max
        lo = torch.where(real, modality_ids, big).amin(dim=1)  # (B,)
        hi = torch.where(real, modality_ids, -1).amax(dim=1)
        multimodal = (hi > lo)[:, None]  # (B, 1)
        return torch.where(multimodal, torch.full_like(modality_ids, self.num_modalities), modality_ids)

    def forward(
        self, x: Tensor, modality_ids: Tensor, key_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """x (B, N, D), modality_ids (B, N) long, key_mask (B, N) -> ((B, N, D), 0.)."""
        if int(modality_ids.max()) >= self.num_modalities or int(modality_ids.min()) < 0:
            raise ValueError(
                f"fusion/mome.py: modality ids must be in [0, {self.num_modalities}), got range "
                f"[{int(modality_ids.min())}, {int(modality_ids.max())}]"
            )
        x = x + self.attn(self.norm1(x), key_mask=key_mask)
        experts = list(self.experts) + ([self.joint] if self.joint is not None else [])
        x = x + dispatch(self.norm2(x), self.expert_ids(modality_ids, key_mask), experts)
        return x, x.new_zeros(())


def load_balancing_loss(probs: Tensor, chosen: Tensor, num_experts: int) -> Tensor:
    """Switch loss ``E * sum_i f_i * P_i``. probs (T, E) router softmax, chosen (T, k) expert ids."""
    f = torch.zeros(num_experts, dtype=probs.dtype, device=probs.device)
    f = f.scatter_add(0, chosen.reshape(-1), torch.ones_like(chosen.reshape(-1), dtype=probs.dtype))
    f = f / max(chosen.numel(), 1)
    p = probs.mean(dim=0)
    return num_experts * (f * p).sum()


class RoutedFFN(nn.Module):
    """Top-k routed feed-forward experts. k=1: output scaled by the router probability (Switch);
    k>1: by the probabilities renormalised over the chosen k."""

    def __init__(self, dim: int, num_experts: int, k: int = 1, mlp_ratio: int = 4) -> None:
        super().__init__()
        if not 1 <= k <= num_experts:
            raise ValueError(f"fusion/mome.py: k must be in [1, {num_experts}], got {k}")
        self.router = nn.Linear(dim, num_experts, bias=False)
        self.experts = nn.ModuleList(ffn(dim, mlp_ratio) for _ in range(num_experts))
        self.k = k

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, N, D) -> ((B, N, D), load-balancing loss over real tokens)."""
        logits = self.router(x)
        acc = torch.promote_types(logits.dtype, torch.float32)
        probs = torch.softmax(logits.to(acc), dim=-1)  # (B, N, E)
        top_p, top_i = probs.topk(self.k, dim=-1)  # (B, N, k)
        gates = top_p if self.k == 1 else top_p / top_p.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for j in range(self.k):
            out = out + dispatch(x, top_i[..., j], self.experts) * gates[..., j, None].to(x.dtype)
        real = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if key_mask is not None:
            real = key_mask.bool()
        aux = load_balancing_loss(probs[real], top_i[real], len(self.experts))
        return out, aux


@register_block
class RoutedBlock(nn.Module):
    """Shared attention + ``RoutedFFN``; same call contract as ``MoMEBlock``."""

    def __init__(self, dim: int, heads: int, num_experts: int, k: int = 1, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = multi_head_attention(dim, heads, bias=True)
        self.norm2 = nn.LayerNorm(dim)
        self.moe = RoutedFFN(dim, num_experts, k, mlp_ratio)

    def forward(
        self, x: Tensor, modality_ids: Tensor, key_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x = x + self.attn(self.norm1(x), key_mask=key_mask)
        y, aux = self.moe(self.norm2(x), key_mask)
        return x + y, aux


class ExpertEncoder(nn.Module):
    """A stack of MoME or routed blocks: (B, N, D) -> ((B, N, D), summed aux loss)."""

    def __init__(self, blocks: Sequence[nn.Module], dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, x: Tensor, modality_ids: Tensor, key_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        aux = x.new_zeros((), dtype=torch.float32)
        for block in self.blocks:
            x, a = block(x, modality_ids, key_mask)
            aux = aux + a
        return self.norm(x), aux


def mome_encoder(
    dim: int, depth: int, heads: int, num_modalities: int, joint_layers: int = 0
) -> ExpertEncoder:
    """VLMo-style: the top ``joint_layers`` blocks also hold a joint (VL) expert."""
    if not 0 <= joint_layers <= depth:
        raise ValueError(f"fusion/mome.py: joint_layers must be in [0, depth={depth}], got {joint_layers}")
    blocks = [
        MoMEBlock(dim, heads, num_modalities, joint_expert=i >= depth - joint_layers)
        for i in range(depth)
    ]
    return ExpertEncoder(blocks, dim)


def routed_encoder(dim: int, depth: int, heads: int, num_experts: int, k: int = 1) -> ExpertEncoder:
    """Learned top-k routing in every block (Switch for k=1)."""
    return ExpertEncoder([RoutedBlock(dim, heads, num_experts, k) for _ in range(depth)], dim)
