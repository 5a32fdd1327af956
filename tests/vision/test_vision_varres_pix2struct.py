"""The ``pix2struct`` resize policy of ``contrastive_varres``: every image fills its patch budget."""

from pathlib import Path

import pytest
import torch

from modalab import registry
from modalab.config import ConfigError, load
from modalab.experiment.rundir import RunDir
from modalab.tasks.varres import budget_size
from modalab.vision.resolution import pix2struct_grid

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TINY = ["train.batch_size=32", "run.progress=false", "model.vision.depth=1", "model.text.depth=1",
        "model.vision.width=32", "model.text.width=32", "model.vision.heads=2", "model.text.heads=2"]


@pytest.mark.parametrize("size", [(8, 8), (8, 96), (48, 96), (40, 52), (21, 73), (96, 8)])
def test_budget_size_policies(size):
    h, w = size
    sm = budget_size(size, 4, 36, "smart")
    p2s = budget_size(size, 4, 36, "pix2struct")
    assert p2s == tuple(4 * g for g in pix2struct_grid(h, w, 36, 4))
    for a, b in (sm, p2s):
        assert a % 4 == 0 and b % 4 == 0 and (a // 4) * (b // 4) <= 36
    assert p2s[0] * p2s[1] >= sm[0] * sm[1]  # pix2struct never uses fewer patches than smart
    if h * w <= 16 * 16:  # a small canvas is enlarged to (about) the budget, smart leaves it small
        assert p2s[0] * p2s[1] > 2 * sm[0] * sm[1]
    with pytest.raises(ValueError, match="unknown policy 'bogus'"):
        budget_size(size, 4, 36, "bogus")


def test_task_packs_pix2struct_grids(tmp_path):
    rec = load(RECIPES / "clip_digits_varres_packed.yaml",
               [*TINY, "data.batching.resize=pix2struct", "data.batching.max_patches=36"])
    task = registry.build("task", rec.task, rec, RunDir.create(tmp_path / "r", "", "x"))
    samples = [task.clip.data.test[i] for i in range(24)]
    batch = task.make_batch(samples)
    want = [pix2struct_grid(*s.media.shape[-2:], 36, 4) for s in samples]
    assert batch.packed.grids == want and all(r * c <= 36 for r, c in want)
    assert sum(r * c for r, c in want) / len(want) > 24  # most of the budget is used
    with torch.no_grad():
        assert task.encode_images(batch).shape == (24, 64)
    with pytest.raises(ConfigError, match="resize"):
        load(RECIPES / "clip_digits_varres_packed.yaml", ["data.batching.resize=bogus"])
