"""A CLIP4Clip-style video-text model: per-frame encoder -> frame pool -> projection, against a
text transformer -> projection; similarity = cosine x learned logit scale.

Parts are modules passed in (``frame_encoder``, ``pool``, ``text_encoder``); ``build_video_text``
assembles the variants a recipe compares by name: ``mean`` (CLIP4Clip meanP), ``seq_transf``
(seqTransf) and ``frame_attention`` (caption-conditioned attention over frames, X-Pool style).

Shapes: video (B, T, C, H, W) -> frame features (B, T, D); tokens (B, L) -> text (B, E) unit norm;
``similarity(video_repr, text)`` -> (Nt, Nv) cosine similarities.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from modalab.config import NamedBase
from modalab.models.video_classifier import frame_encoder
from modalab.registry import register
from modalab.text.encoder import TextTransformer
from modalab.video.temporal import MeanPool
from modalab.video.text_pooling import FrameCaptionAttention, SeqTransfPool

Pool = Literal["mean", "seq_transf", "frame_attention"]


class VideoTextModel(nn.Module):
    """Two towers; with a caption-conditioned pool the video side is scored per caption."""

    def __init__(self, frame_encoder: nn.Module, pool: nn.Module, text_encoder: nn.Module,
                 dim: int, embed_dim: int, init_logit_scale: float = 1 / 0.07,
                 max_logit_scale: float = 100.0) -> None:
        super().__init__()
        self.frame_encoder, self.pool, self.text_encoder = frame_encoder, pool, text_encoder
        self.video_proj = nn.Linear(dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.max_log_scale = math.log(max_logit_scale)
        self.conditional = isinstance(pool, FrameCaptionAttention)

    def scale(self) -> Tensor:
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    def frames(self, video: Tensor) -> Tensor:
        """(B, T, C, H, W) -> (B, T, D): each frame's tokens averaged."""
        return self.frame_encoder(video).mean(2)  # (B, T, N, D) -> (B, T, D)

    def encode_video(self, video: Tensor) -> Tensor:
        """Unit (B, E) video embeddings, or (B, T, D) frame features for a conditional pool."""
        f = self.frames(video)
        return f if self.conditional else F.normalize(self.video_proj(self.pool(f)), dim=-1)

    def encode_text(self, tokens: Tensor) -> Tensor:
        return F.normalize(self.text_proj(self.text_encoder(tokens)), dim=-1)  # (B, E)

    def similarity(self, video_repr: Tensor, text_emb: Tensor) -> Tensor:
        """(Nt, Nv) cosine similarity of every caption with every video."""
        if not self.conditional:
            return text_emb @ video_repr.T
        v = F.normalize(self.video_proj(self.pool(video_repr, text_emb)), dim=-1)  # (Nt, Nv, E)
        return torch.einsum("ae,abe->ab", text_emb, v)


def build_video_text(
    vocab_size: int, pool: Pool = "seq_transf", encoder: Literal["patch", "cnn"] = "cnn",
    dim: int = 64, depth: int = 2, heads: int = 4, embed_dim: int = 64, image_size: int = 32,
    patch: int = 8, channels: int = 3, max_frames: int = 64, grid: int = 4, context_length: int = 16,
    text_depth: int = 2, init_logit_scale: float = 1 / 0.07, max_logit_scale: float = 100.0,
) -> VideoTextModel:
    """A VideoTextModel from plain numbers."""
    enc = frame_encoder(encoder, dim, image_size, patch, channels, grid, max_frames)
    if pool == "mean":
        pooler: nn.Module = MeanPool()
    elif pool == "seq_transf":
        pooler = SeqTransfPool(dim, depth, heads, max_frames)
    elif pool == "frame_attention":
        pooler = FrameCaptionAttention(dim, max_frames)
    else:
        raise ValueError(f"unknown pool '{pool}'; choose mean, seq_transf or frame_attention")
    text = TextTransformer(vocab_size, context_length, dim, text_depth, heads)
    return VideoTextModel(enc, pooler, text, dim, embed_dim, init_logit_scale, max_logit_scale)


class VideoTextConfig(NamedBase):
    pool: Pool = "seq_transf"
    encoder: Literal["patch", "cnn"] = "cnn"
    dim: int = Field(64, gt=0)
    depth: int = Field(2, gt=0, description="transformer blocks of seq_transf")
    heads: int = Field(4, gt=0)
    embed_dim: int = Field(64, gt=0)
    patch: int = Field(8, gt=0, description="patch size (encoder=patch)")
    grid: int = Field(4, gt=0, description="grid x grid tokens per frame (encoder=cnn)")
    tokenizer: Literal["word", "byte"] = "word"
    context_length: int = Field(16, gt=0)
    text_depth: int = Field(2, gt=0)
    init_logit_scale: float = Field(1 / 0.07, gt=0)
    max_logit_scale: float = Field(100.0, gt=0)


@register("model", "video_text", schema=VideoTextConfig)
def build_video_text_model(cfg: VideoTextConfig, *, vocab_size: int, image_size: int, channels: int,
                           max_frames: int) -> VideoTextModel:
    """CLIP4Clip-style video-text model: frame encoder + pool (mean/seq_transf/frame_attention)."""
    return build_video_text(vocab_size, cfg.pool, cfg.encoder, cfg.dim, cfg.depth, cfg.heads,
                            cfg.embed_dim, image_size, cfg.patch, channels, max_frames, cfg.grid,
                            cfg.context_length, cfg.text_depth, cfg.init_logit_scale,
                            cfg.max_logit_scale)
