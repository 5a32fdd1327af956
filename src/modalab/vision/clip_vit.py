"""The ViT layout of pretrained image towers (CLIP, SigLIP, plain ViT), on modalab's blocks.

It differs from :class:`~modalab.vision.vit.VisionTransformer` where the published checkpoints do,
so that their weights load exactly:

- the patch projection may have no bias (CLIP);
- a class token is optional (SigLIP has none; its positions cover patches only);
- an optional norm *before* the blocks (CLIP's ``pre_layrnorm``);
- a final norm on every token (CLIP applies it to the pooled class token only: the same numbers,
  because a LayerNorm acts on each token alone);
- the pool is injected: ``"cls"`` (class token), or any module mapping (B, T, D) -> (B, D), e.g.
  :class:`MapHead` (SigLIP's attention-pooling head); ``head`` (ViT's tanh pooler) follows it.

Shapes: images (B, C, H, W) with H = W = ``image_size`` -> (B, width);
``forward_tokens`` -> (B, T, width) with T = N (+1 with a class token), N = (H/p)**2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.layers import Activation, Mlp, Transformer, torch_mha_attention


class MapHead(nn.Module):
    """Multi-head attention pooling with a learned probe (SigLIP's head, Zhai et al. 2023).

    ``h = attn(probe, x, x)``; ``h + mlp(norm(h))``. Shapes: (B, T, D) -> (B, D). The attention is
    ``layers.torch_mha_attention``: checkpoints with ``nn.MultiheadAttention``'s ``in_proj_*``
    names (transformers' SigLIP head, modalab before the move) load.
    """

    def __init__(self, dim: int, heads: int, mlp_hidden: int, act: Activation, norm_eps: float) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attention = torch_mha_attention(dim, heads)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden, act)

    def forward(self, x: Tensor) -> Tensor:
        probe = self.probe.expand(x.shape[0], -1, -1)  # (B, 1, D)
        h = self.attention(probe, x)  # (B, 1, D)
        return (h + self.mlp(self.norm(h)))[:, 0]  # (B, D)


class PretrainedViT(nn.Module):
    """Pre-norm ViT in the layout of CLIP / SigLIP / ViT checkpoints.

    Args:
        image_size, patch_size, in_channels, width, depth, heads, mlp_hidden: the checkpoint's numbers.
        act: the MLP activation; norm_eps: every LayerNorm's epsilon.
        class_token: prepend a learned class token (CLIP, ViT) or not (SigLIP).
        patch_bias: the patch convolution has a bias (SigLIP, ViT) or not (CLIP).
        pre_norm: a LayerNorm before the blocks (CLIP).
        pool: ``"cls"`` or a module (B, T, D) -> (B, D); head: applied to the pooled vector.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        in_channels: int,
        width: int,
        depth: int,
        heads: int,
        mlp_hidden: int,
        act: Activation = F.gelu,
        norm_eps: float = 1e-5,
        class_token: bool = True,
        patch_bias: bool = False,
        pre_norm: bool = True,
        pool: str | nn.Module = "cls",
        head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if isinstance(pool, str) and (pool != "cls" or not class_token):
            raise ValueError(f"pool {pool!r}: a string pool must be 'cls' (and needs class_token=True)")
        self.image_size, self.patch_size, self.width = image_size, patch_size, width
        self.patch_embed = nn.Conv2d(in_channels, width, patch_size, stride=patch_size, bias=patch_bias)
        n = (image_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.randn(width) * 0.02) if class_token else None
        self.pos_embed = nn.Parameter(torch.randn(n + int(class_token), width) * 0.02)
        self.pre_norm = nn.LayerNorm(width, eps=norm_eps) if pre_norm else None
        self.transformer = Transformer(width, depth, heads, act=act, norm_eps=norm_eps, mlp_hidden=mlp_hidden)
        self.norm = nn.LayerNorm(width, eps=norm_eps)
        self.pool = pool
        self.head = head

    def forward_tokens(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, T, width) after the final norm."""
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"images are {tuple(images.shape[-2:])} but this tower takes "
                f"{self.image_size}x{self.image_size}; preprocess with the checkpoint's processor"
            )
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, width)
        if self.cls_token is not None:
            cls = self.cls_token.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, width)
            x = torch.cat([cls, x], dim=1)  # (B, 1 + N, width)
        x = x + self.pos_embed.to(x.dtype)
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        return self.norm(self.transformer(x))

    def pool_tokens(self, tokens: Tensor) -> Tensor:
        """(B, T, width) -> (B, width): the pool, then the head."""
        pooled = tokens[:, 0] if isinstance(self.pool, str) else self.pool(tokens)
        return self.head(pooled) if self.head is not None else pooled

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, width)."""
        return self.pool_tokens(self.forward_tokens(images))
