"""The video recipes run end to end at smoke size, and the pieces the tasks add behave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modalab import registry
from modalab.config import load
from modalab.data.sources.moving_digits import ACTIONS, make_long_videos
from modalab.experiment.runner import run
from modalab.tasks.video import topk_accuracy
from modalab.video.decode import probe
from modalab.video.merging import ToMeEncoder, set_merge_r, tokens_after_merging

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
CLIPS = ["data.num_clips=32", "data.num_frames=8", "data.frames_per_clip=4", "model.dim=16",
         "model.heads=2", "model.depth=1", "train.steps=2", "train.batch_size=8",
         "train.log_every=1", "run.progress=false", "eval.batch_size=8"]


def _run(name: str, tmp_path: Path, overrides: list[str]) -> tuple[dict, Path]:
    recipe = load(RECIPES / name, [f"data.cache_dir={tmp_path / 'cache'}", *overrides])
    out = run(recipe, tmp_path / "run")
    return json.loads((out / "results.json").read_text()), out


def test_video_actions_recipe(tmp_path):
    res, out = _run("video_actions.yaml", tmp_path, CLIPS)
    assert 0.0 <= res["top1"] <= res["top5"] <= 1.0
    assert set(res["per_class_acc"]) == set(ACTIONS)
    assert (res["num_train"], res["num_val"], res["num_test"], res["num_frames"]) == (20, 4, 8, 4)  # val_fraction 0.15
    assert res["eval_splits"] == ["val", "test"] and 0.0 <= res["val_top1"] <= 1.0
    assert (out / "report.html").is_file() and (out / "artifacts" / "confusion.json").is_file()


def test_video_long_tome_recipe(tmp_path):
    rs = [0, 8, 64]
    res, out = _run("video_long_tome.yaml", tmp_path,
                    [*CLIPS, "data.frames_per_clip=8", "eval.rs=[0,8,64]", "eval.timing_repeats=1"])
    length = 8 * 16  # frames x (4 x 4 CNN grid)
    for r in rs:
        assert 0.0 <= res[f"tome/top1@r{r}"] <= 1.0 and res[f"tome/clips_per_s@r{r}"] > 0
        assert res[f"tome/tokens_out@r{r}"] == tokens_after_merging(length, r, 1)
    assert res["tome/top1@r0"] == res["top1"]  # trained at r = 0: the same model, same clips
    assert res["tome/speedup@r0"] == 1.0 and res["tome/tokens_out@r64"] == 64


def test_video_localization_recipe(tmp_path):
    res, out = _run("video_localization.yaml", tmp_path, [
        "data.num_videos=4", "data.total_frames=48", "data.test_fraction=0.5", "data.val_fraction=0",
        "model.dim=16",
        "model.heads=2", "model.depth=1", "train.steps=2", "train.batch_size=2",
        "train.log_every=1", "run.progress=false",
    ])
    for key in ("mAP@0.3", "mAP@0.4", "mAP@0.5", "mAP@0.6", "mAP@0.7", "mAP_avg"):
        assert 0.0 <= res[key] <= 1.0
    assert res["mAP_avg"] == pytest.approx(sum(res[f"mAP@{t}"] for t in (0.3, 0.4, 0.5, 0.6, 0.7)) / 5)
    assert res["num_steps"] == 24 and res["num_gt_segments"] >= 2
    assert (out / "artifacts" / "segments_first_video.json").is_file()


def test_long_videos_fixed_length(tmp_path):
    rows = make_long_videos(tmp_path, 3, size=32, gap_len=(4, 12), total_frames=60, seed=3)
    for r in rows:
        assert r["num_frames"] == 60 == probe(r["path"]).num_frames
        assert r["segments"] and r["segments"][-1]["end_frame"] <= 60 - 4
    with pytest.raises(ValueError, match="total_frames"):
        make_long_videos(tmp_path, 1, total_frames=20)


def test_keep_decoded_matches_sparse_reads(tmp_path):
    recipe = load(RECIPES / "video_actions.yaml",
                  [f"data.cache_dir={tmp_path}", *CLIPS, "data.sampling=uniform"])
    sparse = registry.build("source", "moving_digits", recipe.data, seed=0)
    cached = registry.build("source", "moving_digits",
                            recipe.data.model_copy(update={"keep_decoded": False}), seed=0)
    for i in range(len(sparse.test)):
        torch.testing.assert_close(sparse.test[i].media, cached.test[i].media, rtol=0, atol=0)


def test_tokens_after_merging_matches_tome_encoder():
    enc = ToMeEncoder(16, depth=3, heads=2, r=0)
    x = torch.randn(2, 37, 16)
    for r in (0, 5, 12, 40):
        set_merge_r(enc, r)
        size = None
        h = x
        for blk in enc.blocks:
            h, size = blk(h, size)
        assert h.shape[1] == tokens_after_merging(37, r, 3)
        torch.testing.assert_close(size.sum(1), torch.full((2, 1), 37.0))


def test_topk_accuracy_hand_case():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [3.0, 2.0, 1.0]])
    labels = torch.tensor([0, 2, 2])
    acc = topk_accuracy(logits, labels, [1, 2, 5])
    assert acc == pytest.approx({"top1": 1 / 3, "top2": 2 / 3, "top5": 1.0})
