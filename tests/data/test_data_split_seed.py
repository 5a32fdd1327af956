"""data.split_seed: the data's train/val/test split drawn from its own seed instead of run.seed, so
post-training seeds can vary while every run (and the towers pretrained on that split) sees the
same training images. Unset, it is run.seed and nothing moves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modalab import registry
from modalab.config import ConfigError, from_dict

SRC = Path(__file__).resolve().parents[2] / "src" / "modalab"
MIN = {"data": {"source": "digits", "image_size": 8}, "model": {"name": "two_tower"}, "loss": {"name": "info_nce"}}


def _ids(ds):
    return [ds[i].id for i in range(len(ds))]


def _splits(recipe):
    return registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)


def test_unset_split_seed_is_run_seed():
    r = from_dict(MIN, ["run.seed=3"])
    assert r.data.split_seed is None and r.data_seed == 3


def test_fixed_split_seed_keeps_the_split_whatever_run_seed():
    fixed = [_splits(from_dict(MIN, [f"run.seed={s}", "data.split_seed=0"])) for s in (0, 4)]
    default0, default4 = _splits(from_dict(MIN, ["run.seed=0"])), _splits(from_dict(MIN, ["run.seed=4"]))
    for name in ("train", "val", "test"):
        assert _ids(getattr(fixed[0], name)) == _ids(getattr(fixed[1], name)) == _ids(getattr(default0, name))
    assert _ids(default4.test) != _ids(default0.test)  # without it, run.seed moves the split


def test_negative_split_seed_is_rejected_naming_the_key():
    with pytest.raises(ConfigError, match="split_seed"):
        from_dict(MIN, ["data.split_seed=-1"])


def test_every_source_build_reads_the_data_seed():
    """A task that built its data from run.seed would silently ignore data.split_seed."""
    calls = [(p, line) for p in SRC.rglob("*.py") for line in p.read_text(encoding="utf-8").splitlines()
             if re.search(r'registry\.build\("source"', line)]
    assert len(calls) >= 10
    bad = [f"{p.relative_to(SRC)}: {line.strip()}" for p, line in calls if "seed=recipe.data_seed" not in line]
    assert bad == []
