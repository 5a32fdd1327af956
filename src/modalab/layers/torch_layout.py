"""``nn.MultiheadAttention``'s layout on :class:`~modalab.layers.attention.MultiHeadAttention`.

Modules that used ``nn.MultiheadAttention`` (time-frequency attention, the window-query speech
downsampler, the diffusion denoiser's cross-attention, SigLIP's attention-pooling head) now build
``torch_mha_attention``: modalab's attention (SDPA, ``key_mask`` True = real key) with

- the same initial values drawn in the same order from the global generator as
  ``nn.MultiheadAttention(dim, heads, kdim=kv_dim, vdim=kv_dim, bias=True)`` (the output
  projection's default ``nn.Linear`` draw, then Xavier-uniform on the fused (3E, E) input
  projection, or on q, k, v one by one when the key width differs; every bias zero), so a seeded
  model starts where it did before the move;
- a load-time split of the old parameter names (``in_proj_weight`` / ``in_proj_bias`` cut into
  q, k, v; ``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight`` renamed), so checkpoints
  written before the move load, strict included.

Two behaviours differ from ``nn.MultiheadAttention``: a query whose keys are all masked returns
zeros instead of NaN, and attention dropout draws its mask through SDPA (same probability, other
random numbers).
"""

from __future__ import annotations

import torch
from torch import nn

from modalab.layers.attention import MultiHeadAttention
from modalab.layers.state_keys import rename_on_load, split_on_load

QKV = ("q_proj", "k_proj", "v_proj")
# nn.MultiheadAttention's names -> ours (``out_proj.weight`` / ``out_proj.bias`` are the same)
TORCH_MHA_SPLIT = {
    "in_proj_weight": tuple(f"{p}.weight" for p in QKV),
    "in_proj_bias": tuple(f"{p}.bias" for p in QKV),
}
TORCH_MHA_RENAME = {f"{p}_weight": f"{p}.weight" for p in QKV}


def accept_torch_mha_keys(attn: nn.Module) -> nn.Module:
    """Let ``attn`` (q/k/v/out projections named as :class:`MultiHeadAttention`'s) load a state
    dict written by ``nn.MultiheadAttention``."""
    split_on_load(attn, TORCH_MHA_SPLIT)
    rename_on_load(attn, TORCH_MHA_RENAME)
    return attn


def torch_mha_attention(dim: int, heads: int, kv_dim: int | None = None,
                        dropout: float = 0.0) -> MultiHeadAttention:
    """Cross- or self-attention of queries (.., dim) over keys/values (.., kv_dim), initialised
    and loadable like ``nn.MultiheadAttention(dim, heads, dropout, kdim=kv_dim, vdim=kv_dim)``.

    Call as ``attn(x, context, key_mask=~key_padding_mask)``; shapes (B, T, dim), (B, S, kv_dim)
    -> (B, T, dim).
    """
    if dim % heads:
        raise ValueError(f"layers/torch_layout.py: width {dim} is not divisible by heads {heads}")
    kv = kv_dim or dim
    dev = torch.empty(0).device  # the ambient default device (``meta`` while a loader builds)
    q, k, v = (nn.utils.skip_init(nn.Linear, width, dim, device=dev) for width in (dim, kv, kv))
    out = nn.utils.skip_init(nn.Linear, dim, dim, device=dev)
    with torch.no_grad():
        out.reset_parameters()  # nn.MultiheadAttention builds out_proj (and draws) first
        if kv == dim:
            fused = torch.empty(3 * dim, dim, device=dev)
            nn.init.xavier_uniform_(fused)  # fan_in E, fan_out 3E, as on ``in_proj_weight``
            for lin, part in zip((q, k, v), fused.chunk(3, dim=0)):
                lin.weight.copy_(part)
        else:
            for lin in (q, k, v):
                nn.init.xavier_uniform_(lin.weight)
        for lin in (q, k, v, out):
            lin.bias.zero_()
    attn = MultiHeadAttention(heads, q, k, v, out, dropout=dropout)
    return accept_torch_mha_keys(attn)  # type: ignore[return-value]
