"""Distribution-level scores of a tokenizer's reconstructions on the in-house feature network.

``reconstruction_fid`` reconstructs held-out images (N, C, H, W) in [0, 1] and returns:

- ``fid``: FID between the features of the reconstructions and of the originals (reconstruction
  FID, "rFID" in the VQGAN papers), all N against all N;
- ``fid_real_floor``: FID between two random halves of the real held-out features (N/2 vs N/2);
- ``fid_real_train_same_n``: all N real held-out images against N other real images (the training
  split): what real digits score at exactly this comparison's sample sizes. Read ``fid`` against
  this one; FID is biased upwards at small N, so neither floor is 0;
- ``lpips_feat``: the mean LPIPS-style distance (``vision/lpips_features.py``) between each image
  and its reconstruction, over the same network.

The network is ``eval/feature_net.FeatureCNN`` trained (cached) on the real training split only;
use a different seed from any network a loss was trained through, or the metric rewards the loss.
In-domain scores: comparable between modalab runs with the same feature-net config and data only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from modalab.eval.feature_net import FeatureNetConfig, cached_feature_net
from modalab.eval.generation import fid, real_floor
from modalab.vision.lpips_features import FeatureLPIPS


@torch.no_grad()
def reconstruct(tok: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Reconstructions (N, C, H, W) clamped to [0, 1]; ``tok(x)`` returns (recon, indices, aux)."""
    was = tok.training
    tok.eval()
    out = torch.cat([tok(images[i : i + batch_size])[0] for i in range(0, len(images), batch_size)])
    tok.train(was)
    return out.clamp(0, 1)


@torch.no_grad()
def reconstruction_fid(tok: nn.Module, images: Tensor, train_images: Tensor, train_labels: Tensor,
                       cfg: FeatureNetConfig, cache_dir: Path, seed: int = 0,
                       batch_size: int = 256) -> dict[str, float]:
    """Scores above for held-out ``images`` (N, C, H, W); the network is trained on ``train_images``
    (M, C, H, W) in [0, 1] with ``train_labels`` (M,), M >= N."""
    if len(train_images) < len(images):
        raise ValueError(f"reconstruction_fid: {len(train_images)} training images cannot give a "
                         f"same-size real comparison for {len(images)} held-out images")
    net = cached_feature_net(train_images, train_labels, cfg, cache_dir)
    recons = reconstruct(tok, images, batch_size)
    real, fake = net.embed(images), net.embed(recons)  # (N, F) float64
    pick = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))[: len(images)]
    lp = FeatureLPIPS(net, reduction="none")
    dist = torch.cat([lp(images[i : i + batch_size].float(), recons[i : i + batch_size].float())
                      for i in range(0, len(images), batch_size)])
    return {"fid": fid(real, fake), "fid_real_floor": real_floor(real, seed=seed),
            "fid_real_train_same_n": fid(real, net.embed(train_images[pick])),
            "lpips_feat": float(dist.mean())}
