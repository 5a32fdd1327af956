"""Per-clip test correctness: written by the video_actions task, and recomputed from a checkpoint by
scripts/video_actions_per_item.py (for runs made before the task wrote it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from modalab.config import load
from modalab.experiment.runner import run
from modalab.experiment.stats import collect_items

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("video_actions_per_item", ROOT / "scripts" / "video_actions_per_item.py")
per_item = importlib.util.module_from_spec(spec)
spec.loader.exec_module(per_item)

SMOKE = ["data.num_clips=32", "data.num_frames=8", "data.frames_per_clip=4", "model.dim=16",
         "model.heads=2", "model.depth=1", "train.steps=2", "train.batch_size=8",
         "run.progress=false", "eval.batch_size=8"]


def test_per_item_matches_results_and_feeds_compare(tmp_path, capsys):
    recipe = load(ROOT / "recipes" / "video_actions.yaml", [f"data.cache_dir={tmp_path / 'cache'}", *SMOKE])
    out = run(recipe, tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    own = json.loads((out / "artifacts" / "per_item.json").read_text())  # written by the task itself
    assert own["metrics"]["top1"] == own["metrics"]["test_top1"]
    assert sum(own["metrics"]["top1"]) / res["num_test"] == pytest.approx(res["test_top1"], abs=1e-6)
    assert per_item.main([str(out)]) == 0
    saved = json.loads((out / "artifacts" / "per_item.json").read_text())
    hits = saved["metrics"]["test_top1"]
    assert saved["split"] == "test" and len(hits) == res["num_test"] == 8
    assert set(hits) <= {0, 1} and sum(hits) / len(hits) == pytest.approx(res["test_top1"], abs=1e-6)
    items = collect_items([out], "test_top1")  # what modalab compare's two-level bootstrap reads
    (arm,) = items
    assert items[arm][0].tolist() == hits

    (out / "artifacts" / "per_item.json").unlink()  # a run whose record disagrees: nothing written
    res["test_top1"] = res["test_top1"] + 0.5  # not what these weights give on these clips
    (out / "results.json").write_text(json.dumps(res))
    assert per_item.main([str(out)]) == 1
    assert not (out / "artifacts" / "per_item.json").exists()
    assert "per_item.json not written" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no finished run"):
        per_item.main([str(tmp_path / "cache")])
