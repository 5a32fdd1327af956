"""recipes/audio_tokens_hierarchy.yaml end to end at smoke size; the event_clips source."""

import json
from pathlib import Path

import numpy as np
import pytest

from modalab.config import ConfigError, load
from modalab.data.sources.event_clips import event_clips
from modalab.experiment.runner import run

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "audio_tokens_hierarchy.yaml"
SMOKE = ["run.progress=false", "train.num_threads=1", "train.steps=2", "train.batch_size=4", "data.n_per_class=4",
         "data.n_test_per_class=1", "data.duration=0.2", "model.codec_steps=2", "model.encoder_steps=2",
         "model.semantic_codes=4", "model.dim=16", "model.depth=1", "model.heads=2", "eval.per_class=1",
         "model.codec_batch=2", "model.codec_warmup_steps=1", "data.val_fraction=0.25"]


def test_event_clips_balanced_scaled_and_seeded():
    x, y = event_clips(3, seed=5, duration=0.25, rms=0.1)
    assert x.shape == (21, 4000) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [3] * 7
    assert np.allclose(np.sqrt((x.astype(np.float64) ** 2).mean(1)), 0.1, rtol=1e-4)
    x2, y2 = event_clips(3, seed=5, duration=0.25, rms=0.1)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)


def test_hierarchy_recipe_runs_at_smoke_size(tmp_path):
    out = run(load(RECIPE, SMOKE), tmp_path / "r")
    res = json.loads((out / "results.json").read_text())
    for key in ("class_match", "judge_acc_real", "judge_acc_codec", "val_class_match"):
        assert 0.0 <= res[key] <= 1.0, key
    assert res["class_match_chance"] == pytest.approx(1 / 7)
    assert res["nll_semantic"] > 0 and res["nll_acoustic"] > 0
    # 0.2 s: 20 log-mel frames -> 5 semantic tokens; 3200 samples / hop 80 -> 40 codec frames x 2 levels
    assert res["semantic_len"] == 5 and res["acoustic_frames"] == 40 and res["acoustic_levels"] == 2
    assert res["num_train"] == 21 and res["num_val"] == 7 and res["num_test"] == 7


def test_hierarchy_rejects_more_levels_than_the_codec_has(tmp_path):
    with pytest.raises((ConfigError, ValueError), match="acoustic_levels"):
        run(load(RECIPE, [*SMOKE, "model.acoustic_levels=9"]), tmp_path / "r")
