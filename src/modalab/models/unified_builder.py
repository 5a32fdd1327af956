"""Building blocks of the ``unified`` model (task ``tasks/unified.py``): its model config and
builder, the tokenizer branch's pretraining on the training split, and a PNG grid writer for
generated images."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from modalab.config import NamedBase, Section
from modalab.vision.tokenizer_builders import num_down_for
from modalab.models.unified import Denoiser, GaussianDiffusion, UnifiedModel, UnifiedTransformer
from modalab.registry import register
from modalab.train.checkpoint import atomic_write_bytes
from modalab.train.engine import LoopConfig, fit
from modalab.data.mixing import MixtureSchedule
from modalab.vision.tokenizer import ImageTokenizer
from modalab.vision.quantizers import build_quantizer


class TokenizerBranch(Section):
    quantizer: Literal["vq", "fsq"] = "vq"
    codebook_size: int = Field(64, gt=1, description="K for vq; fsq picks levels with ~K codes")
    token_grid: int = Field(4, gt=0, description="tokens per side")
    channels: int = Field(16, gt=0)
    latent_dim: int = Field(16, gt=0)
    dead_code_threshold: float = Field(1.0, ge=0, description="vq: restart codes below this EMA usage")
    pretrain_steps: int = Field(400, ge=0, description="steps on the training split, then frozen")
    pretrain_batch_size: int = Field(64, gt=0)
    pretrain_lr: float = Field(2e-3, gt=0)


class TransformerPart(Section):
    dim: int = Field(128, gt=0)
    depth: int = Field(4, gt=0)
    heads: int = Field(4, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)


class DiffusionPart(Section):
    channels: int = Field(32, gt=0, description="U-Net width (a multiple of 8)")
    timesteps: int = Field(1000, gt=1)


class UnifiedConfig(NamedBase):
    text_context: int = Field(10, gt=2, description="caption tokens incl. <bos>/<eos>")
    tokenizer: TokenizerBranch = Field(default_factory=TokenizerBranch)
    transformer: TransformerPart = Field(default_factory=TransformerPart)
    diffusion: DiffusionPart = Field(default_factory=DiffusionPart)
    understand_input: Literal["codes", "latents"] = Field(
        "codes", description="what the understand path reads: the frozen tokenizer's VQ codes, or its "
                             "encoder's continuous latents before quantization (through a learned "
                             "projection, transformer.image_in); generation always writes codes")


@register("model", "unified", schema=UnifiedConfig)
def build_unified_model(cfg: UnifiedConfig, *, text_vocab: int, image_size: int,
                        channels: int) -> UnifiedModel:
    """Image tokenizer + shared text/image-code transformer + conditional diffusion decoder."""
    t = cfg.tokenizer
    vq = dict(dead_code_threshold=t.dead_code_threshold) if t.quantizer == "vq" else {}
    q = build_quantizer(t.quantizer, t.latent_dim, t.codebook_size, **vq)
    tok = ImageTokenizer(q, in_channels=channels, channels=t.channels,
                         num_down=num_down_for(image_size, t.token_grid), latent_dim=t.latent_dim)
    K = tok.codebook_size
    tr = UnifiedTransformer(text_vocab, K, t.token_grid**2, dim=cfg.transformer.dim,
                            depth=cfg.transformer.depth, heads=cfg.transformer.heads,
                            max_text=cfg.text_context, dropout=cfg.transformer.dropout,
                            feature_dim=t.latent_dim if cfg.understand_input == "latents" else None)
    den = Denoiser(channels, cfg.transformer.dim, channels=cfg.diffusion.channels)
    return UnifiedModel(tr, tok, GaussianDiffusion(den, cfg.diffusion.timesteps),
                        image_shape=(channels, image_size, image_size),
                        token_grid=(t.token_grid, t.token_grid))


def train_tokenizer_branch(tok: ImageTokenizer, images: Tensor, cfg: TokenizerBranch,
                           seed: int) -> dict[str, float]:
    """Pretrain ``tok`` on images (N, C, H, W) in [0, 1]: L1 + the quantizer's own loss, AdamW
    with a cosine decay, batches drawn with a seeded generator. Returns step count, final L1,
    training-set code usage and seconds."""
    if cfg.pretrain_steps == 0:
        return {"steps": 0}
    g = torch.Generator().manual_seed(seed)
    lr = cfg.pretrain_lr
    opt = torch.optim.AdamW([{"params": list(tok.parameters()), "lr": lr, "base_lr": lr}],
                            betas=(0.5, 0.9), weight_decay=0.0)
    n = min(cfg.pretrain_batch_size, len(images))

    def batches():
        while True:
            yield images[torch.randint(len(images), (n,), generator=g)]  # (n, C, H, W)

    last = {"l1": float("nan")}

    def step(x: Tensor) -> tuple[Tensor, dict[str, float]]:
        recon, _, aux = tok(x)
        l1 = F.l1_loss(recon, x)
        last["l1"] = float(l1.detach())
        return (l1 + aux["loss"] if "loss" in aux else l1), {}

    t0 = time.perf_counter()
    # cosine from lr down to 0.05 lr, no warm-up, no clipping
    loop = LoopConfig(steps=cfg.pretrain_steps, schedule="cosine", min_lr_ratio=0.05, grad_clip=None,
                      log_every=cfg.pretrain_steps, progress=False)
    fit(tok, batches(), step, opt, loop, log=lambda rec: None)
    rec = last["l1"]
    tok.eval()
    with torch.no_grad():
        codes = torch.cat([tok.encode(images[i : i + 512]).flatten() for i in range(0, len(images), 512)])
    used = codes.unique().numel() / (tok.codebook_size or 1)
    return {"steps": cfg.pretrain_steps, "final_l1": rec, "train_codebook_usage": used,
            "seconds": time.perf_counter() - t0}


def save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    """safetensors file written through a temporary name and a rename."""
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def save_grid(rows: list[Tensor], path: Path, scale: int = 4) -> None:
    """Write rows of images (each (n, C, H, W) in [0, 1]) as one PNG, atomically."""
    from PIL import Image

    rows = [r for r in rows if len(r)]
    if not rows:
        return
    c, h, w = rows[0].shape[1:]
    ncol = max(len(r) for r in rows)
    canvas = np.zeros((len(rows) * (h + 1), ncol * (w + 1), c), dtype=np.float32)
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            canvas[i * (h + 1) : i * (h + 1) + h, j * (w + 1) : j * (w + 1) + w] = \
                img.permute(1, 2, 0).float().cpu().numpy()
    arr = (canvas.clip(0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(arr[..., 0] if c == 1 else arr).resize(
        (arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


# objective --------------------------------------------------------------------------------
class MixPhase(Section):
    start: float = Field(ge=0, lt=1, description="training progress (step / steps) where it starts")
    weights: dict[str, float] = Field(description="understand / generate -> weight")


class UnifiedLossConfig(NamedBase):
    mix: list[MixPhase] = Field(
        default_factory=lambda: [MixPhase(start=0.0, weights={"understand": 3, "generate": 1}),
                                 MixPhase(start=0.5, weights={"understand": 1, "generate": 1})],
        min_length=1, description="task mixture schedule (understand : generate per phase)")
    interpolate: bool = Field(False, description="shift the weights linearly between phases")
    diffusion_weight: float = Field(1.0, ge=0, description="weight of the diffusion loss")
    p_uncond: float = Field(0.1, ge=0, lt=1, description="condition dropout (classifier-free guidance)")
    interface_from_stage: int = Field(
        1, ge=0, description="from this train.stages index on, the diffusion loss trains the "
                             "transformer (before it, the condition is detached)")
    diffusion_items: Literal["generate", "all"] = Field(
        "generate", description="which items of a batch the diffusion decoder learns from: those the "
                                "mixture picked 'generate', or every image (the decoder then sees 4x the "
                                "images early on; the 'understand' items' condition is detached, so the "
                                "transformer's understand : generate mix is unchanged)")
    ema_decay: float | None = Field(None, ge=0, lt=1, description="sample the diffusion path from an EMA "
                                                                  "of the decoder (null: the live weights)")


@register("loss", "unified", schema=UnifiedLossConfig)
def build_unified_loss(cfg: UnifiedLossConfig) -> MixtureSchedule:
    """Understand / generate task mixture for the unified model (next-token + diffusion losses)."""
    names = sorted(cfg.mix[0].weights)
    if names != ["generate", "understand"]:
        raise ValueError(f"loss.mix[0].weights: keys {names}; expected 'understand' and 'generate'")
    return MixtureSchedule([(p.start, p.weights) for p in cfg.mix], interpolate=cfg.interpolate)
