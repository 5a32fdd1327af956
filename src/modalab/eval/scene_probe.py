"""Does a tokenizer keep what a digit scene says? A per-cell digit probe (chapter 5.2.3, token count).

A digit scene (``data/scenes.py``) places 1-4 digits in the cells of a 2x2 grid, at most one per
cell. ``cell_labels`` turns a scene into 4 labels in reading order: 0 = empty cell, 1 + d = digit d.
``CellProbe`` cuts the image into the same 2x2 grid and classifies each cell with one shared small
CNN (11 classes). It is trained on REAL training-split images only
(``train_cell_probe``, under ``fork_rng`` so a run's own randomness is untouched); then
``probe_metrics`` scores real and reconstructed images of a held-out split with it:

- ``cell_acc``: share of the 4 cells labelled right (empty or which digit);
- ``digit_acc``: share of occupied cells whose digit identity is right (the detail that matters);
- ``count_acc``: share of scenes whose number of occupied cells is right;
- ``scene_acc``: share of scenes with all 4 cells right.

The gap between the real-image score (the probe's ceiling) and the reconstruction score is what the
tokenizer lost.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import Tensor, nn

from modalab.train.checkpoint import atomic_write_bytes

CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))  # reading order
NUM_CLASSES = 11  # empty + digits 0-9


def cell_labels(scene: object) -> Tensor:
    """(4,) long: 0 for an empty cell, 1 + digit for an occupied one (cells in reading order)."""
    out = torch.zeros(len(CELLS), dtype=torch.long)
    for d in scene.digits:  # type: ignore[attr-defined]
        if d.cell not in CELLS:
            raise ValueError(f"cell_labels: digit {d.digit} in cell {d.cell}; expected one of {CELLS}")
        out[CELLS.index(d.cell)] = 1 + d.digit
    return out


class CellProbe(nn.Module):
    """(N, C, H, W) in [0, 1] -> logits (N, 4, 11): one shared CNN classifies each 2x2 grid cell."""

    def __init__(self, channels: int = 3, width: int = 16) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(4),
        )
        self.head = nn.Linear(2 * w * 16, NUM_CLASSES)
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"CellProbe: images must be (N, {self.channels}, H, W) with H, W even; "
                             f"got {tuple(x.shape)}")
        n = x.shape[0]
        c, h, w = x.shape[1], x.shape[2] // 2, x.shape[3] // 2
        cells = (x * 2 - 1).reshape(n, c, 2, h, 2, w).permute(0, 2, 4, 1, 3, 5)  # (N, 2, 2, C, h, w)
        cells = cells.reshape(n * 4, c, h, w)  # (4N, C, h, w), cells in reading order
        f = self.body(cells).flatten(1)  # (4N, 2w * 16)
        return self.head(f).reshape(n, len(CELLS), NUM_CLASSES)  # (N, 4, 11)


def train_cell_probe(images: Tensor, labels: Tensor, steps: int = 400, batch_size: int = 64,
                     lr: float = 3e-3, width: int = 16, seed: int = 0) -> CellProbe:
    """Train a ``CellProbe`` on real images (N, C, H, W) in [0, 1] and labels (N, 4); eval mode."""
    if images.shape[0] != labels.shape[0] or labels.shape[1:] != (len(CELLS),):
        raise ValueError(f"train_cell_probe: images {tuple(images.shape)} and labels {tuple(labels.shape)}; "
                         f"expected (N, C, H, W) and (N, {len(CELLS)})")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():  # the caller may run under no_grad
        torch.manual_seed(seed)
        net = CellProbe(images.shape[1], width)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
        for _ in range(steps):
            idx = torch.randint(len(images), (min(batch_size, len(images)),), generator=g)
            logits = net(images[idx].float())  # (B, 4, 11)
            loss = F.cross_entropy(logits.reshape(-1, NUM_CLASSES), labels[idx].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def cached_cell_probe(images: Tensor, labels: Tensor, cache_dir: Path, steps: int = 400,
                      seed: int = 0, width: int = 16) -> CellProbe:
    """``train_cell_probe`` once per (training data, steps, seed, width): the weights are saved as
    safetensors in ``cache_dir`` under a hash of all of them, so arms that share a data split share
    one probe (its training is the same computation)."""
    h = hashlib.sha256(images.float().contiguous().numpy().tobytes())
    h.update(labels.long().contiguous().numpy().tobytes())
    h.update(f"{tuple(images.shape)}/{steps}/{seed}/{width}".encode())
    path = Path(cache_dir) / f"cell_probe-{h.hexdigest()[:16]}.safetensors"
    if path.is_file():
        net = CellProbe(images.shape[1], width)
        net.load_state_dict(load_file(str(path)))
        return net.eval()
    net = train_cell_probe(images, labels, steps=steps, seed=seed, width=width)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in net.state_dict().items()}))
    return net


@torch.no_grad()
def probe_metrics(probe: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256) -> dict[str, float]:
    """``cell_acc``, ``digit_acc``, ``count_acc``, ``scene_acc`` of ``probe`` on images (N, C, H, W)
    in [0, 1] with cell labels (N, 4) (see the module docstring)."""
    pred = torch.cat([probe(images[i:i + batch_size]).argmax(-1)
                      for i in range(0, len(images), batch_size)])  # (N, 4)
    right = pred == labels  # (N, 4)
    occupied = labels > 0
    return {
        "cell_acc": float(right.float().mean()),
        "digit_acc": float(right[occupied].float().mean()) if occupied.any() else float("nan"),
        "count_acc": float(((pred > 0).sum(1) == occupied.sum(1)).float().mean()),
        "scene_acc": float(right.all(1).float().mean()),
    }
