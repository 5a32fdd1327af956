"""Modality-agnostic transformer building blocks shared by the text, vision, audio, video and
fusion packages: attention (``attention.py``), the feed-forward (``mlp.py``), the pre-norm block, its
stack and the registered block types FSDP shards (``block.py``), and the load-time renames that keep
old checkpoints loading (``state_keys.py``). ``layers`` imports nothing else from modalab.
"""

from modalab.layers.attention import (
    Attention, KVCache, MultiHeadAttention, RopeFn, causal_mask, multi_head_attention, naive_attention,
)
from modalab.layers.block import Block, Transformer, block_types, register_block
from modalab.layers.mlp import Activation, Mlp
from modalab.layers.state_keys import rename_on_load

__all__ = [
    "Activation", "Attention", "Block", "KVCache", "Mlp", "MultiHeadAttention", "RopeFn", "Transformer",
    "block_types", "causal_mask", "multi_head_attention", "naive_attention", "register_block",
    "rename_on_load",
]
