"""The in-house dual encoder behind modalab's CLIP score: a tiny CLIP trained on the real training split.

Image tower: the ``FeatureCNN`` of ``eval/feature_net.py`` with its head as the projection.
Text tower: mean of word embeddings over non-pad ids, then an MLP (digit captions are short; order
matters little). Trained with symmetric InfoNCE (``align/losses.info_nce``) where captions of the
same class are not counted as negatives (``same_label_mask``). Weights are cached as safetensors
keyed by config + training data, like the feature network. Scores from it are in-domain only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import Tensor, nn

from modalab.align.losses import info_nce, same_label_mask
from modalab.eval.feature_net import FeatureCNN
from modalab.train.checkpoint import atomic_write_bytes

PAD_ID = 0


@dataclass(frozen=True)
class ScoreEncoderConfig:
    embed_dim: int = 64
    width: int = 16
    steps: int = 300
    batch_size: int = 128
    lr: float = 2e-3
    logit_scale: float = 1 / 0.07
    seed: int = 0


class BagOfWordsText(nn.Module):
    """(B, L) ids, 0 = pad -> (B, E): mean of embeddings over non-pad positions, then an MLP."""

    def __init__(self, vocab_size: int, embed_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, ids: Tensor) -> Tensor:
        keep = (ids != PAD_ID).unsqueeze(-1).float()  # (B, L, 1)
        pooled = (self.embed(ids) * keep).sum(1) / keep.sum(1).clamp_min(1)  # (B, E)
        return self.mlp(pooled)


class ScoreEncoder(nn.Module):
    """encode_image: (N, C, H, W) in [0, 1] -> (N, E) unit vectors; encode_text: (N, L) ids -> (N, E)."""

    def __init__(self, channels: int, vocab_size: int, embed_dim: int = 64, width: int = 32) -> None:
        super().__init__()
        self.image = FeatureCNN(channels, embed_dim, width)  # its head projects to the shared space
        self.text = BagOfWordsText(vocab_size, embed_dim)
        self.channels, self.vocab_size = channels, vocab_size

    def encode_image(self, images: Tensor) -> Tensor:
        return F.normalize(self.image(images.float()), dim=-1)

    def encode_text(self, ids: Tensor) -> Tensor:
        if ids.dim() != 2 or int(ids.max()) >= self.vocab_size or int(ids.min()) < 0:
            raise ValueError(f"ScoreEncoder.encode_text: ids must be (N, L) in [0, {self.vocab_size}); got "
                             f"shape {tuple(ids.shape)}, range [{int(ids.min())}, {int(ids.max())}]")
        return F.normalize(self.text(ids), dim=-1)

    @torch.no_grad()
    def embed(self, images: Tensor | None = None, ids: Tensor | None = None, batch_size: int = 512) -> Tensor:
        """Embeddings in eval mode and batches, of images or of token ids (exactly one given)."""
        if (images is None) == (ids is None):
            raise ValueError("ScoreEncoder.embed: pass exactly one of images= or ids=")
        x, fn = (images, self.encode_image) if images is not None else (ids, self.encode_text)
        was = self.training
        self.eval()
        out = torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        self.train(was)
        return out


@torch.enable_grad()  # callers evaluate under no_grad
def train_score_encoder(images: Tensor, ids: Tensor, labels: Tensor, vocab_size: int,
                        cfg: ScoreEncoderConfig) -> ScoreEncoder:
    """Contrastive training on real (image, caption) pairs of the training split."""
    if not len(images) == len(ids) == len(labels):
        raise ValueError(f"train_score_encoder: {len(images)} images, {len(ids)} captions, {len(labels)} labels")
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    enc = ScoreEncoder(images.shape[1], vocab_size, cfg.embed_dim, cfg.width)
    opt = torch.optim.Adam(enc.parameters(), lr=cfg.lr)
    for _ in range(cfg.steps):
        idx = torch.randperm(len(images), generator=g)[: cfg.batch_size]
        loss = info_nce(enc.encode_image(images[idx]), enc.encode_text(ids[idx]), cfg.logit_scale,
                        mask=same_label_mask(labels[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc.eval()


def cached_score_encoder(images: Tensor, ids: Tensor, labels: Tensor, vocab_size: int,
                         cfg: ScoreEncoderConfig, cache_dir: Path) -> ScoreEncoder:
    """Load ``cache_dir/score_encoder_<key>.safetensors`` trained on exactly these inputs, or train it."""
    h = hashlib.sha256(json.dumps({**asdict(cfg), "vocab": vocab_size}, sort_keys=True).encode())
    for t in (images.float(), ids.long(), labels.long()):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    path = Path(cache_dir) / f"score_encoder_{h.hexdigest()[:16]}.safetensors"
    if path.is_file():
        enc = ScoreEncoder(images.shape[1], vocab_size, cfg.embed_dim, cfg.width)
        enc.load_state_dict(load_file(str(path)))
        return enc.eval()
    enc = train_score_encoder(images, ids, labels, vocab_size, cfg)
    state = {k: v.detach().contiguous() for k, v in enc.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(state, metadata={"config": json.dumps(asdict(cfg)), "vocab": str(vocab_size)}))
    return enc
