"""Modality-agnostic transformer building blocks shared by the text, vision, audio, video and
fusion packages: attention (``attention.py``), the feed-forward (``mlp.py``) and the pre-norm block
and stack (``block.py``). ``layers`` imports nothing else from modalab.
"""

from modalab.layers.attention import (
    Attention, KVCache, MultiHeadAttention, RopeFn, causal_mask, multi_head_attention, naive_attention,
)
from modalab.layers.block import Block, Transformer
from modalab.layers.mlp import Activation, Mlp

__all__ = [
    "Activation", "Attention", "Block", "KVCache", "Mlp", "MultiHeadAttention", "RopeFn", "Transformer",
    "causal_mask", "multi_head_attention", "naive_attention",
]
