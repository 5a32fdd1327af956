"""An LPIPS-style perceptual distance over the layers of modalab's in-house feature network.

LPIPS (Zhang et al. 2018) compares two images through the activations of a fixed network: at each
tapped layer l the activations (B, C_l, H_l, W_l) are unit-normalised over channels at every
position, the squared difference is taken, weighted per channel, averaged over positions, and the
layers are summed:

    d(x, y) = sum_l w_l * mean_{h,w} sum_c (n(f_l(x))_{chw} - n(f_l(y))_{chw})^2,
    n(z)_{chw} = z_{chw} / (sqrt(sum_c z_{chw}^2) + eps)       (eps = 1e-10, as LPIPS)

The network is ``eval/feature_net.FeatureCNN``, a small classifier modalab trains on the real
**training** split and saves as safetensors (nothing is downloaded); the taps are the outputs of its
four ReLUs (two at full resolution, two after each stride-2 stage). LPIPS's 'lin' weights are
learned from human 2AFC judgements that modalab does not have. We use the fixed choice of its
``lpips=False`` variant: every channel weighs 1 and every layer weighs ``w_l = 1`` (channels summed,
layers summed), so each layer contributes at most 4 (unit vectors differ by at most 2). Any other
fixed ``layer_weights`` can be passed.

The network is frozen (no gradients to its weights, always in eval mode); gradients flow to the
images, which is what a tokenizer's perceptual term needs. Images are (B, C, H, W) in [0, 1].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from modalab.eval.feature_net import FeatureCNN


def unit_normalise(z: Tensor, eps: float = 1e-10) -> Tensor:
    """(B, C, H, W) -> the same with every position's channel vector scaled to unit L2 norm."""
    return z / (z.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class FeatureLPIPS(nn.Module):
    """LPIPS-style distance d(x, y) over a frozen ``FeatureCNN``'s ReLU outputs.

    Args:
        net: a trained ``FeatureCNN`` (its weights are frozen here).
        layer_weights: one non-negative weight per tapped layer (default 1 each).
        eps: added to the channel norm before dividing (LPIPS uses 1e-10).
        reduction: ``"mean"`` (a scalar, the loss) or ``"none"`` (one distance per image, (B,)).
    """

    def __init__(self, net: FeatureCNN, layer_weights: Sequence[float] | None = None,
                 eps: float = 1e-10, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"FeatureLPIPS: reduction='{reduction}'; expected 'mean' or 'none'")
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.num_layers = sum(isinstance(m, nn.ReLU) for m in net.body)
        weights = [1.0] * self.num_layers if layer_weights is None else [float(w) for w in layer_weights]
        if len(weights) != self.num_layers or any(w < 0 for w in weights):
            raise ValueError(f"FeatureLPIPS: layer_weights must be {self.num_layers} non-negative numbers "
                             f"(one per ReLU of the feature net); got {list(weights)}")
        self.register_buffer("layer_weights", torch.tensor(weights), persistent=False)
        self.eps, self.reduction = eps, reduction

    def train(self, mode: bool = True) -> "FeatureLPIPS":
        super().train(mode)
        self.net.eval()  # the feature network is a fixed function
        return self

    def layer_features(self, x: Tensor) -> list[Tensor]:
        """Images (B, C, H, W) in [0, 1] -> the ReLU outputs, each (B, C_l, H_l, W_l)."""
        if x.dim() != 4 or x.shape[1] != self.net.channels:
            raise ValueError(f"FeatureLPIPS: images must be (B, {self.net.channels}, H, W); got {tuple(x.shape)}")
        h, out = x * 2 - 1, []  # FeatureCNN.features' input scaling
        for layer in self.net.body:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                out.append(h)
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape:
            raise ValueError(f"FeatureLPIPS: images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        fx, fy = self.layer_features(x), self.layer_features(y)
        dist = x.new_zeros(x.shape[0])
        for w, a, b in zip(self.layer_weights, fx, fy):
            d = (unit_normalise(a, self.eps) - unit_normalise(b, self.eps)).pow(2).sum(dim=1)  # (B, H_l, W_l)
            dist = dist + w.to(d.dtype) * d.mean(dim=(1, 2))  # (B,)
        return dist.mean() if self.reduction == "mean" else dist


def load_feature_net(path: str | Path, channels: int | None = None) -> FeatureCNN:
    """A ``FeatureCNN`` from a safetensors checkpoint written by ``eval/feature_net.cached_feature_net``.

    The architecture (width, channels, classes) comes from the file's metadata; the weights are
    loaded with safetensors (no pickle). Raises ``FileNotFoundError`` when the file is missing and
    ``ValueError`` naming the file and the key when it does not describe a FeatureCNN, or when its
    input channels differ from ``channels``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"feature-net checkpoint {path} not found; train one on the training split with "
            f"modalab.eval.feature_net.cached_feature_net(images, labels, FeatureNetConfig(), cache_dir) "
            f"(the tokenizer task does this for loss.perceptual=lpips_features)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"feature-net checkpoint {path}: not a readable safetensors file ({e})") from e
    missing = [k for k in ("config", "channels", "classes") if k not in meta]
    if missing:
        raise ValueError(f"feature-net checkpoint {path}: metadata lacks {missing}; expected the file "
                         f"cached_feature_net writes (metadata config, channels, classes)")
    try:
        width, ch, classes = int(json.loads(meta["config"])["width"]), int(meta["channels"]), int(meta["classes"])
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"feature-net checkpoint {path}: bad metadata {meta} ({e})") from e
    if channels is not None and ch != channels:
        raise ValueError(f"feature-net checkpoint {path}: trained on {ch}-channel images, but the "
                         f"images here have {channels} channels; train a feature net on this data")
    net = FeatureCNN(ch, classes, width)
    state, expected = load_file(str(path)), net.state_dict()
    problems = [f"missing key '{k}'" for k in expected if k not in state]
    problems += [f"unexpected key '{k}'" for k in state if k not in expected]
    problems += [f"key '{k}' has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if problems:
        raise ValueError(f"feature-net checkpoint {path} does not match FeatureCNN(channels={ch}, "
                         f"classes={classes}, width={width}): " + "; ".join(problems[:5]))
    net.load_state_dict(state)
    return net.eval()


def load_feature_lpips(path: str | Path, channels: int | None = None,
                       layer_weights: Sequence[float] | None = None) -> FeatureLPIPS:
    """``FeatureLPIPS`` over the feature network saved at ``path`` (see ``load_feature_net``)."""
    return FeatureLPIPS(load_feature_net(path, channels), layer_weights)
