"""Task audio_events writes per-scene jackknife values that compare's two-level bootstrap resamples."""

import json
from pathlib import Path

import numpy as np
import pytest

from modalab.config import load
from modalab.experiment.runner import run
from modalab.experiment.stats import collect_items

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SMOKE = ["run.progress=false", "train.num_threads=1", "train.steps=3", "train.batch_size=8", "data.n_train=16",
         "data.n_test=12", "data.duration=2.0", "model.widths=[4,8]", "model.n_mels=16", "loss.frame_weight=1.0"]


def test_per_item_values_average_to_the_test_metrics(tmp_path):
    out = run(load(RECIPES / "audio_captions_cascade.yaml", SMOKE), tmp_path / "r")
    res = json.loads((out / "results.json").read_text())
    saved = json.loads((out / "artifacts" / "per_item.json").read_text())
    assert saved["split"] == "test" and saved["ids"] == list(range(12))
    for key in ("tagging_mAP", "cascade/event_f1"):
        values = np.asarray(saved["metrics"][key])
        assert values.shape == (12,) and np.all(np.isfinite(values))
        assert values.mean() == pytest.approx(res[key], abs=1e-9)
    items = collect_items([out], "tagging_mAP")
    (arm,) = items
    np.testing.assert_allclose(items[arm][0], saved["metrics"]["tagging_mAP"])
