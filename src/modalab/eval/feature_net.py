"""An in-house feature network for generation metrics (FID / KID / precision-recall).

FID is defined on the features of a fixed classifier (Inception-v3 in Heusel et al. 2017). modalab
downloads nothing, so the features come from a small CNN classifier trained here, in seconds, on the
real *training* split of the same domain (the digits). Its penultimate activations (after global
average pooling) are the feature space. Scores computed with it are in-domain scores: comparable
between modalab runs that use the same feature-net config and training data, never with published
Inception-FID numbers (so the chapter's "FID < 5 acceptable" thresholds do not transfer; compare
against the real-vs-real floor that ``eval/generation.py`` reports beside every FID).

The trained weights are saved as safetensors in a cache folder, keyed by a hash of the config and
of the training data, so every run with the same data reuses the same network.
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

from modalab.train.checkpoint import atomic_write_bytes


@dataclass(frozen=True)
class FeatureNetConfig:
    """Plain numbers that define the network and its training (they key the cache)."""

    width: int = 16
    steps: int = 300
    batch_size: int = 64
    lr: float = 5e-3
    seed: int = 0


class FeatureCNN(nn.Module):
    """(N, C, H, W) in [0, 1] -> logits (N, classes); ``features`` gives (N, 2 * width)."""

    def __init__(self, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(2 * w, num_classes)
        self.channels, self.num_classes, self.width = channels, num_classes, width

    def features(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"FeatureCNN: images must be (N, {self.channels}, H, W); got {tuple(x.shape)}")
        return self.body(x * 2 - 1).mean(dim=(2, 3))  # (N, 2w, h, w) -> (N, 2w)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def embed(self, images: Tensor, batch_size: int = 512) -> Tensor:
        """Features (N, 2 * width) in float64, computed in eval mode and batches."""
        was = self.training
        self.eval()
        out = torch.cat([self.features(images[i : i + batch_size].float())
                         for i in range(0, len(images), batch_size)])
        self.train(was)
        return out.double()


@torch.enable_grad()  # callers evaluate under no_grad
def train_feature_net(images: Tensor, labels: Tensor, cfg: FeatureNetConfig) -> FeatureCNN:
    """Train a FeatureCNN on real images (N, C, H, W) in [0, 1] with labels (N,) (training split)."""
    if images.dim() != 4 or len(images) != len(labels):
        raise ValueError(f"train_feature_net: need images (N, C, H, W) and labels (N,); got "
                         f"{tuple(images.shape)} and {tuple(labels.shape)}")
    g = torch.Generator().manual_seed(cfg.seed)
    # the caller's global RNG is left as it was: training a metric network during a run (at its
    # first evaluation, or for a perceptual loss) must not change that run's own randomness
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = FeatureCNN(images.shape[1], int(labels.max()) + 1, cfg.width)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        for _ in range(cfg.steps):
            idx = torch.randint(len(images), (min(cfg.batch_size, len(images)),), generator=g)
            loss = F.cross_entropy(net(images[idx].float()), labels[idx].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def _cache_key(images: Tensor, labels: Tensor, cfg: FeatureNetConfig) -> str:
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(str(tuple(images.shape)).encode())
    h.update(images.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(labels.detach().long().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def feature_net_path(images: Tensor, labels: Tensor, cfg: FeatureNetConfig, cache_dir: Path) -> Path:
    """Where ``cached_feature_net`` keeps the network for these images/labels and config."""
    return Path(cache_dir) / f"feature_net_{_cache_key(images, labels, cfg)}.safetensors"


def cached_feature_net(images: Tensor, labels: Tensor, cfg: FeatureNetConfig, cache_dir: Path) -> FeatureCNN:
    """Load the network trained on exactly these images/labels with this config, or train and save it.

    The file is ``feature_net_path(...)`` = ``cache_dir/feature_net_<key>.safetensors`` (written
    atomically), with the config and shapes in its metadata.
    """
    path = feature_net_path(images, labels, cfg, cache_dir)
    classes = int(labels.max()) + 1
    if path.is_file():
        net = FeatureCNN(images.shape[1], classes, cfg.width)
        net.load_state_dict(load_file(str(path)))
        return net.eval()
    net = train_feature_net(images, labels, cfg)
    meta = {"config": json.dumps(asdict(cfg)), "channels": str(images.shape[1]), "classes": str(classes)}
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(state, metadata=meta))
    return net
