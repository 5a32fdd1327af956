"""Two-modality "do these agree?" classifiers, one per fusion pattern of chapter 5.5.

Every model reads an image (B, C, H, W) and a caption (B, L) token ids, and returns one logit (B,)
for "the caption describes this image". They share the same stems (patch embedding and word
embedding, each with learned positions) and the same width/depth/heads; only the fusion differs:

- ``early``: modality embeddings, one concatenated sequence, shared blocks, class-token pool.
- ``late``: one encoder per modality, pooled embeddings fused by an MLP over ``[a, b, a*b, |a-b|]``.
- ``gated_cross_attention``: an image encoder; the text blocks each get a Flamingo gated
  cross-attention layer to the image tokens (gates at 0); masked mean of the text tokens.
- ``mome``: one sequence, shared self-attention, a feed-forward expert per modality and a joint
  expert in the top layer (VLMo); class-token pool.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from modalab.fusion.cross_attention import GatedCrossAttentionBlock
from modalab.fusion.early_late import ConcatFuse, early_fusion, encoder_block, late_fusion, masked_mean
from modalab.fusion.mome import mome_encoder

FusionKind = Literal["early", "late", "gated_cross_attention", "mome"]
KINDS: tuple[str, ...] = ("early", "late", "gated_cross_attention", "mome")


class PatchStem(nn.Module):
    """(B, C, H, W) -> (B, N, D) non-overlapping patches, linear embedding, learned positions."""

    def __init__(self, image_size: int, channels: int, patch: int, dim: int) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"fusion/agreement.py: image_size {image_size} is not a multiple of patch {patch}")
        self.patch = patch
        self.proj = nn.Linear(channels * patch * patch, dim)
        self.pos = nn.Parameter(torch.randn((image_size // patch) ** 2, dim) * 0.02)

    def forward(self, images: Tensor) -> Tensor:
        p = self.patch
        b, c, h, w = images.shape
        x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, p, p)
        x = x.reshape(b, (h // p) * (w // p), c * p * p)  # (B, N, C*p*p)
        return self.proj(x) + self.pos


class TokenStem(nn.Module):
    """(B, L) ids -> (B, L, D) embeddings with learned positions (id 0 = padding)."""

    def __init__(self, vocab_size: int, context_length: int, dim: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(context_length, dim) * 0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.emb(tokens) + self.pos[: tokens.shape[1]]


class CrossAttentionFusion(nn.Module):
    """Image encoder blocks; text blocks each preceded by a gated cross-attention to the image."""

    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.image_blocks = nn.ModuleList(encoder_block(dim, heads) for _ in range(depth))
        self.cross = nn.ModuleList(
            GatedCrossAttentionBlock(dim, dim, heads=heads, head_dim=dim // heads) for _ in range(depth)
        )
        self.text_blocks = nn.ModuleList(encoder_block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        """image (B, N, D), text (B, L, D), text_mask (B, L) -> (B, D)."""
        for blk in self.image_blocks:
            image = blk(image)
        for cross, blk in zip(self.cross, self.text_blocks):
            text = blk(cross(text, image), key_mask=text_mask)
        return masked_mean(self.norm(text), text_mask)


class MoMEFusion(nn.Module):
    """[cls; image; text] with modality embeddings -> MoME blocks -> class token (B, D)."""

    def __init__(self, dim: int, depth: int, heads: int, joint_layers: int = 1) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.modality_emb = nn.Parameter(torch.randn(2, dim) * 0.02)
        self.encoder = mome_encoder(dim, depth, heads, num_modalities=2, joint_layers=joint_layers)

    def forward(self, image: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        b, n, _ = image.shape
        x = torch.cat([self.cls.expand(b, -1, -1), image + self.modality_emb[0], text + self.modality_emb[1]], 1)
        ids = torch.cat([image.new_zeros(b, 1 + n, dtype=torch.long),
                         text.new_ones(text.shape[:2], dtype=torch.long)], dim=1)  # (B, 1 + N + L)
        mask = torch.cat([text_mask.new_ones(b, 1 + n), text_mask], dim=1)
        x, _ = self.encoder(x, ids, mask)
        return x[:, 0]


class AgreementModel(nn.Module):
    """images (B, C, H, W) (or image tokens (B, N, W) from a frozen encoder, when the image stem is
    a projection) + tokens (B, L) -> agreement logit (B,)."""

    def __init__(self, image_stem: nn.Module, text_stem: nn.Module, kind: str, body: nn.Module, dim: int) -> None:
        super().__init__()
        self.image_stem, self.text_stem, self.body, self.kind = image_stem, text_stem, body, kind
        self.head = nn.Linear(dim, 1)

    def forward(self, images: Tensor, tokens: Tensor) -> Tensor:
        img, txt, mask = self.image_stem(images), self.text_stem(tokens), tokens != 0
        if self.kind in ("early", "late"):
            pooled = self.body({"image": img, "text": txt}, {"text": mask})  # (B, D)
        else:
            pooled = self.body(img, txt, mask)
        return self.head(pooled).squeeze(-1)


def agreement_model(
    kind: str, *, image_size: int, channels: int, patch: int, vocab_size: int, context_length: int,
    dim: int = 64, depth: int = 2, heads: int = 4, image_token_dim: int | None = None,
) -> AgreementModel:
    """Build the ``kind`` fusion classifier with stems of width ``dim``. With ``image_token_dim``
    the image input is already tokens (B, N, image_token_dim) of a frozen encoder, projected by
    a linear map; otherwise raw images are cut into ``patch`` x ``patch`` patches."""
    if kind == "early":
        body: nn.Module = early_fusion(dim, ["image", "text"], depth, heads, pool="cls")
    elif kind == "late":
        fuse = ConcatFuse(["image", "text"], dim, dim, interactions=True)
        body = late_fusion(dim, ["image", "text"], depth, heads, fuse, pool="cls")
    elif kind == "gated_cross_attention":
        body = CrossAttentionFusion(dim, depth, heads)
    elif kind == "mome":
        body = MoMEFusion(dim, depth, heads)
    else:
        raise ValueError(f"fusion/agreement.py: unknown fusion kind {kind!r}; expected one of {KINDS}")
    stem = nn.Linear(image_token_dim, dim) if image_token_dim else PatchStem(image_size, channels, patch, dim)
    return AgreementModel(stem, TokenStem(vocab_size, context_length, dim), kind, body, dim)
