"""A small Whisper-style audio encoder: two convs (second stride 2), sinusoidal positions, blocks.

Whisper's encoder: Conv1d(n_mels, D, 3, pad 1) + GELU, Conv1d(D, D, 3, stride 2, pad 1) + GELU,
fixed sinusoidal position embeddings, pre-norm transformer blocks, final LayerNorm. With 100 mel
frames per second (hop 160 at 16 kHz) the stride-2 conv gives 50 tokens per second.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoids(length: int, dim: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's sinusoidal table: (length, dim) = [sin | cos] over log-spaced timescales."""
    if dim % 2 != 0:
        raise ValueError(f"sinusoids need an even dim, got {dim}")
    inc = math.log(max_timescale) / (dim // 2 - 1)
    inv = torch.exp(-inc * torch.arange(dim // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class Block(nn.Module):
    """Pre-norm self-attention (F.scaled_dot_product_attention) + GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor, key_padding: Tensor | None = None) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, D // self.heads).unbind(2)  # (B, T, H, d)
        mask = None if key_padding is None else ~key_padding[:, None, None, :]  # True = attend
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=mask)  # (B, H, T, d)
        x = x + self.out(a.transpose(1, 2).reshape(B, T, D))  # (B, T, D)
        return x + self.mlp(self.ln2(x))


class WhisperStyleEncoder(nn.Module):
    """Log-mel (B, n_mels, T) -> (B, ceil(T / 2), dim); ``hidden_states`` lists every block's output.

    Positions come from a fixed table of ``max_frames // 2`` rows (Whisper: 1500 for 30 s).
    """

    def __init__(self, n_mels: int = 80, dim: int = 256, depth: int = 4, heads: int = 4,
                 max_frames: int = 3000):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.register_buffer("pos", sinusoids((max_frames + 1) // 2, dim), persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.ln_post = nn.LayerNorm(dim)
        self.dim = dim
        self.frame_rate_ratio = 2  # output frames per input frame = 1/2

    def forward(self, mel: Tensor, return_hidden: bool = False):
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, T/2, D)
        if x.shape[1] > self.pos.shape[0]:
            raise ValueError(f"{mel.shape[-1]} mel frames exceed max_frames={2 * self.pos.shape[0]}")
        x = x + self.pos[: x.shape[1]].to(x.dtype)
        hidden = []
        for blk in self.blocks:
            x = blk(x)
            hidden.append(x)
        x = self.ln_post(x)
        return (x, hidden) if return_hidden else x
