"""The class-per-folder video reader: layout, UCF split files, corrupted files, a recipe run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from modalab import registry
from modalab.config import from_dict
from modalab.data.dataset import DataError
from modalab.data.sources.moving_digits import render_action
from modalab.video.decode import write_video

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
CLASSES = {"move_left": "move_left", "zoom_in": "zoom_in"}


def _make_folder(root: Path, per_class: int = 3, corrupt: bool = False) -> Path:
    """2 classes x ``per_class`` tiny H.264 clips (16 frames, 16x16); optionally one bad .mp4."""
    for c, action in enumerate(CLASSES):
        (root / action).mkdir(parents=True)
        for k in range(per_class):
            frames = render_action(action, 16, size=16, seed=10 * c + k)  # (16, 16, 16, 3)
            ext = ".avi" if k == 2 else ".mp4"
            codec = "mpeg4" if ext == ".avi" else "libx264"
            write_video(root / action / f"v_{action}_g{k:02d}{ext}", frames, fps=8, codec=codec)
    (root / "move_left" / "notes.txt").write_text("not a video")  # ignored: not a video extension
    if corrupt:
        rng = np.random.default_rng(0)
        (root / "zoom_in" / "broken.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return root


def _cfg(root: Path, **kw) -> object:
    raw = {"source": "video_folder", "root": str(root), "frames_per_clip": 4, "size": 16,
           "test_fraction": 0.25, "val_fraction": 0.0, **kw}
    schema = registry.get("source", "video_folder").schema
    return schema(**raw)


def test_layout_classes_and_frames(tmp_path):
    root = _make_folder(tmp_path / "vids")
    ds = registry.build("source", "video_folder", _cfg(root), seed=0)
    assert ds.classnames == ["move_left", "zoom_in"]
    assert len(ds.train) + len(ds.test) == 6 and len(ds.test) == 2 and ds.skipped == []
    s = ds.test[0]
    assert tuple(s.media.shape) == (4, 3, 16, 16) and s.label in (0, 1)
    assert Path(s.id).parent.name == ds.classnames[s.label]
    assert len(s.meta["frames"]) == 4 and max(s.meta["frames"]) < 16


def test_corrupted_file_error_names_it(tmp_path):
    root = _make_folder(tmp_path / "vids", corrupt=True)
    with pytest.raises(DataError, match=r"broken\.mp4"):
        registry.build("source", "video_folder", _cfg(root), seed=0)


def test_corrupted_file_skipped_and_counted(tmp_path):
    root = _make_folder(tmp_path / "vids", corrupt=True)
    ds = registry.build("source", "video_folder", _cfg(root, on_error="skip"), seed=0)
    assert ds.num_skipped == 1 and "broken.mp4" in ds.skipped[0]
    assert len(ds.train) + len(ds.test) == 6  # the six good clips remain


def test_ucf_split_files(tmp_path):
    root = _make_folder(tmp_path / "vids")
    (root / "trainlist01.txt").write_text(
        "move_left/v_move_left_g00.mp4 1\nmove_left/v_move_left_g01.mp4 1\n"
        "zoom_in/v_zoom_in_g00.mp4 2\nzoom_in/v_zoom_in_g01.mp4 2\n")
    (root / "testlist01.txt").write_text("move_left/v_move_left_g02.avi\nzoom_in/v_zoom_in_g02.avi\n")
    ds = registry.build("source", "video_folder", _cfg(root), seed=0)
    assert sorted(Path(ds.test[i].id).name for i in range(len(ds.test))) == [
        "v_move_left_g02.avi", "v_zoom_in_g02.avi"]
    assert len(ds.train) == 4
    # a listed file that does not exist: an error naming the split file and line, or a counted skip
    (root / "testlist01.txt").write_text("move_left/v_move_left_g02.avi\nzoom_in/missing.mp4\n")
    with pytest.raises(DataError, match=r"testlist01\.txt:2: 'zoom_in/missing\.mp4'"):
        registry.build("source", "video_folder", _cfg(root), seed=0)
    ds = registry.build("source", "video_folder", _cfg(root, on_error="skip"), seed=0)
    assert ds.num_skipped == 1 and len(ds.test) == 1
    (root / "testlist01.txt").unlink()
    with pytest.raises(DataError, match="no matching testlist"):
        registry.build("source", "video_folder", _cfg(root), seed=0)


def test_not_a_folder_layout(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        registry.build("source", "video_folder", _cfg(tmp_path / "nope"), seed=0)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="no .mp4"):
        registry.build("source", "video_folder", _cfg(tmp_path / "flat"), seed=0)


def test_video_actions_recipe_on_a_folder(tmp_path):
    """``video_actions`` trains from a class-per-folder dataset (2 steps) with a skipped bad file."""
    from modalab.experiment.runner import run

    root = _make_folder(tmp_path / "vids", per_class=4, corrupt=True)
    raw = yaml.safe_load((RECIPES / "video_actions.yaml").read_text())
    raw["data"] = {"source": "video_folder", "root": str(root), "frames_per_clip": 4, "size": 16,
                   "test_fraction": 0.25, "val_fraction": 0.0, "on_error": "skip"}
    recipe = from_dict(raw, ["model.dim=16", "model.heads=2", "model.depth=1", "train.steps=2",
                             "train.batch_size=4", "train.log_every=1", "run.progress=false",
                             "eval.batch_size=4"])
    out = run(recipe, tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    assert res["num_test"] == 2 and res["num_train"] == 6
    assert set(res["per_class_acc"]) == {"move_left", "zoom_in"}
    assert 0.0 <= res["top1"] <= 1.0
