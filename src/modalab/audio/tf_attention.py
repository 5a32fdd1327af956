"""Time-frequency attention (chapter 5.3.4), fixed so that it runs and does what it says.

The chapter's sketch averages a (B, T, F, D) feature map over frequency, runs self-attention over
time, averages over time, runs self-attention over frequency, broadcasts both back and fuses them
with a linear layer. Its bugs: ``nn.MultiheadAttention`` defaults to (L, B, D) inputs, so passing
(B, T, D) attends across the batch instead of time; and the output drops the input (no residual),
so stacking blocks loses the local time-frequency detail. Here: batch-first attention, pre-norm, a
residual connection, and the fused (T, F) context is added to every cell. Both attentions are
modalab's (``layers.torch_mha_attention``: SDPA, initialised and loadable as the
``nn.MultiheadAttention`` they replace).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modalab.layers import torch_mha_attention


class TimeFreqAttention(nn.Module):
    """(B, T, F, D) -> (B, T, F, D): x + fuse([attn_time(mean_F x), attn_freq(mean_T x)])."""

    def __init__(self, dim: int = 512, heads: int = 8, dropout: float = 0.0):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.norm = nn.LayerNorm(dim)
        self.time_attn = torch_mha_attention(dim, heads, dropout=dropout)
        self.freq_attn = torch_mha_attention(dim, heads, dropout=dropout)
        self.fusion = nn.Linear(2 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"TimeFreqAttention expects (B, T, F, D), got {tuple(x.shape)}")
        B, T, Fq, D = x.shape
        h = self.norm(x)
        x_t = h.mean(dim=2)  # (B, T, D)
        x_t = self.time_attn(x_t)  # (B, T, D)
        x_f = h.mean(dim=1)  # (B, F, D)
        x_f = self.freq_attn(x_f)  # (B, F, D)
        fused = torch.cat([x_t.unsqueeze(2).expand(B, T, Fq, D),
                           x_f.unsqueeze(1).expand(B, T, Fq, D)], dim=-1)  # (B, T, F, 2D)
        return x + self.fusion(fused)
