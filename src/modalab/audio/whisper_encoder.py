"""A small Whisper-style audio encoder: two convs (second stride 2), sinusoidal positions, blocks.

Whisper's encoder: Conv1d(n_mels, D, 3, pad 1) + GELU, Conv1d(D, D, 3, stride 2, pad 1) + GELU,
fixed sinusoidal position embeddings, pre-norm transformer blocks (``layers.Block``), final LayerNorm. With 100 mel
frames per second (hop 160 at 16 kHz) the stride-2 conv gives 50 tokens per second.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.layers import Block, rename_on_load


def sinusoids(length: int, dim: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's sinusoidal table: (length, dim) = [sin | cos] over log-spaced timescales."""
    if dim % 2 != 0:
        raise ValueError(f"sinusoids need an even dim, got {dim}")
    inc = math.log(max_timescale) / (dim // 2 - 1)
    inv = torch.exp(-inc * torch.arange(dim // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


# Parameter names of the encoder's blocks before they became ``layers.Block`` (old -> new); the
# feed-forward's ``mlp.0`` / ``mlp.2`` are renamed by ``layers.Mlp`` itself.
LEGACY_BLOCK_KEYS = {"ln1.": "norm1.", "ln2.": "norm2.", "qkv.": "attn.qkv.", "out.": "attn.proj."}


def block(dim: int, heads: int, mlp_ratio: int = 4) -> Block:
    """Whisper's pre-norm block: SDPA self-attention + GELU MLP (``layers.Block``); checkpoints
    written with the old parameter names (``ln1``, ``qkv``, ``out``, ``ln2``) still load.

    Call ``blk(x)`` or ``blk(x, attn_mask=~key_padding[:, None, None, :])`` (True = attend)."""
    blk = Block(dim, heads, mlp_ratio)
    rename_on_load(blk, LEGACY_BLOCK_KEYS)
    return blk


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
        self.blocks = nn.ModuleList(block(dim, heads) for _ in range(depth))
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
