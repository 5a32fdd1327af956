"""Issue 21: the tokenizer harness scores VAL unless asked for TEST (test digits never used for a
choice), and the per-cell digit probe on scenes against hand-computed values."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import modalab.eval.tokenizer_sweep as sweep
from modalab.data.scenes import Digit, Scene, render, sample_scene
from modalab.eval.scene_probe import CellProbe, cell_labels, probe_metrics, train_cell_probe


def test_digits_splits_are_disjoint_and_test_is_the_last_297():
    all_ = sweep.digits_images(8)
    d = sweep.digits_splits(8, seed=3, val_fraction=0.1)
    assert torch.equal(d["test"], all_[sweep.NUM_TRAIN:]) and len(d["test"]) == 297
    assert len(d["train"]) + len(d["val"]) == sweep.NUM_TRAIN and 140 <= len(d["val"]) <= 160
    rows = {tuple(r.flatten().tolist()): i for i, r in enumerate(all_[: sweep.NUM_TRAIN])}
    tr = {rows[tuple(r.flatten().tolist())] for r in d["train"]}
    va = {rows[tuple(r.flatten().tolist())] for r in d["val"]}
    assert not tr & va  # (duplicated scans would merge; none collide in the first 1500)
    assert len(tr) == len(d["train"]) and len(va) == len(d["val"])
    other = sweep.digits_splits(8, seed=4, val_fraction=0.1)["val"]
    assert not torch.equal(other, d["val"])  # the seed picks val
    with pytest.raises(ValueError, match="val_fraction=0"):
        sweep.digits_splits(8, val_fraction=0.0)


def test_train_tokenizer_scores_val_by_default_and_test_only_when_asked(monkeypatch):
    seen = []
    real = sweep.evaluate_tokenizer
    monkeypatch.setattr(sweep, "evaluate_tokenizer", lambda tok, x: seen.append(x.clone()) or real(tok, x))
    kw = dict(quantizer="continuous", image_size=8, num_down=1, channels=8, latent_dim=4, steps=2,
              batch_size=8, seed=1)
    m = sweep.train_tokenizer(**kw)
    d = sweep.digits_splits(8, seed=1)
    assert m["split"] == "val" and torch.equal(seen[-1], d["val"]) and m["num_eval"] == len(d["val"])
    m = sweep.train_tokenizer(**kw, split="test")
    assert m["split"] == "test" and torch.equal(seen[-1], d["test"])
    assert m["bits_per_image"] == 16 * 4 * 32  # continuous, no KL: float32 storage
    with pytest.raises(ValueError, match="split='train'"):
        sweep.train_tokenizer(**kw, split="train")


def _scene(cells_digits):
    return Scene(tuple(Digit(d, "red", "large", 0, c) for c, d in cells_digits))


def test_cell_labels_and_probe_metrics_hand_values():
    assert cell_labels(_scene([((1, 0), 7), ((0, 1), 0)])).tolist() == [0, 1, 8, 0]
    scenes = [sample_scene(random.Random(i), 1 + i % 4, {d: [0] for d in range(10)}) for i in range(20)]
    for s in scenes:  # labels agree with the scene: one non-zero label per digit, in its cell
        lab = cell_labels(s)
        assert int((lab > 0).sum()) == len(s.digits)
    labels = torch.tensor([[0, 3, 0, 5], [2, 0, 0, 0]])

    class Fixed(nn.Module):
        def forward(self, x):  # predicts [[0, 3, 4, 5], [2, 0, 0, 0]] for any input
            pred = torch.tensor([[0, 3, 4, 5], [2, 0, 0, 0]])[: len(x)]
            return nn.functional.one_hot(pred, 11).float()

    m = probe_metrics(Fixed(), torch.zeros(2, 3, 8, 8), labels)
    assert m["cell_acc"] == 7 / 8 and m["digit_acc"] == 1.0  # all 3 occupied cells right
    assert m["count_acc"] == 0.5 and m["scene_acc"] == 0.5  # scene 0 has a phantom digit


def test_probe_learns_cells_and_leaves_the_global_rng_alone():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (256, 4), generator=g)
    x = torch.zeros(256, 3, 8, 8)
    for k, (r, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):  # label = brightness of the cell
        x[:, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = (labels[:, k] / 2.0)[:, None, None, None]
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    probe = train_cell_probe(x, labels, steps=150, batch_size=64, lr=1e-2, width=8, seed=0)
    assert torch.equal(torch.rand(3), before)
    assert probe_metrics(probe, x, labels)["cell_acc"] > 0.95
    assert CellProbe(3, 8)(torch.rand(2, 3, 32, 32)).shape == (2, 4, 11)
    with pytest.raises(ValueError, match=r"CellProbe: images must be \(N, 3, H, W\)"):
        CellProbe(3, 8)(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="labels"):
        train_cell_probe(x, labels[:, :3], steps=1)


def test_rendered_scene_cells_hold_their_digits():
    scans = torch.rand(1, 8, 8)
    img = render(_scene([((1, 1), 4)]), scans, 32)  # one large digit in the bottom-right cell
    assert img[:, :16, :].abs().sum() == 0 and img[:, 16:, 16:].abs().sum() > 0


def test_cell_probe_equals_classifying_each_cropped_cell():
    torch.manual_seed(0)
    probe = CellProbe(3, 4).double()
    x = torch.rand(2, 3, 12, 16, dtype=torch.float64)
    got = probe(x)  # (2, 4, 11)
    for k, (r, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        crop = x[:, :, 6 * r:6 * r + 6, 8 * c:8 * c + 8]
        ref = probe.head(probe.body(crop * 2 - 1).flatten(1))
        assert torch.allclose(got[:, k], ref, atol=1e-12)


def test_cached_probe_trains_once_and_reloads_the_same_weights(tmp_path):
    from modalab.eval.scene_probe import cached_cell_probe

    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(16, 3, 8, 8, generator=g), torch.randint(0, 11, (16, 4), generator=g)
    a = cached_cell_probe(x, y, tmp_path, steps=3, seed=0, width=4)
    assert len(list(tmp_path.iterdir())) == 1
    b = cached_cell_probe(x, y, tmp_path, steps=3, seed=0, width=4)
    ref = train_cell_probe(x, y, steps=3, seed=0, width=4)
    for k, v in ref.state_dict().items():
        assert torch.equal(a.state_dict()[k], v) and torch.equal(b.state_dict()[k], v), k
    cached_cell_probe(x, y, tmp_path, steps=4, seed=0, width=4)  # other settings: another file
    assert len(list(tmp_path.iterdir())) == 2
