"""Modality-agnostic transformer building blocks shared by the text, vision, audio, video and
fusion packages: attention (``attention.py``), the feed-forward (``mlp.py``), the pre-norm block, its
stack and the registered block types FSDP shards (``block.py``), and the load-time renames that keep
old checkpoints loading (``state_keys.py``); ``torch_layout.py`` builds the attention in
``nn.MultiheadAttention``'s initialisation and checkpoint layout. ``layers`` imports nothing else
from modalab.
"""

from modalab.layers.attention import (
    Attention, KVCache, MultiHeadAttention, RopeFn, causal_mask, multi_head_attention, naive_attention,
)
from modalab.layers.block import Block, Transformer, block_types, register_block
from modalab.layers.mlp import Activation, Mlp
from modalab.layers.state_keys import rename_on_load, split_on_load
from modalab.layers.torch_layout import accept_torch_mha_keys, torch_mha_attention

__all__ = [
    "Activation", "Attention", "accept_torch_mha_keys", "Block", "KVCache", "Mlp", "MultiHeadAttention", "RopeFn",
    "Transformer", "block_types", "causal_mask", "multi_head_attention", "naive_attention", "register_block",
    "rename_on_load", "split_on_load", "torch_mha_attention",
]
