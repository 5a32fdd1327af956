"""Annotation-driven video readers on fixture videos written here with PyAV: Kinetics-style CSV
(trimmed files and clipping by time), ActivityNet / THUMOS JSON (seconds and fps-aware frames),
MSR-VTT JSON; one corrupted file each (named error, or counted skip); a short recipe run each."""

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
FPS = 8


def _video(path: Path, action: str, frames: int = 16, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, render_action(action, frames, size=16, seed=seed), fps=FPS)


def _corrupt(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _build(source: str, **raw):
    cfg = registry.get("source", source).schema(source=source, **raw)
    return registry.build("source", source, cfg, seed=0)


# --------------------------------------------------------------------------------- kinetics


def _kinetics(root: Path, corrupt: bool = False) -> Path:
    lines = ["label,youtube_id,time_start,time_end,split"]
    for k in range(8):
        label, split = ("zoom_in", "move_left")[k % 2], "test" if k >= 6 else "train"
        yid = f"yt{k:02d}"
        _video(root / f"{yid}_{10 * k:06d}_{10 * k + 2:06d}.mp4", label, seed=k)
        lines.append(f"{label},{yid},{10 * k},{10 * k + 2},{split}")
    if corrupt:
        _corrupt(root / "bad_000000_000002.mp4")
        lines.append("zoom_in,bad,0,2,train")
    lines.append("zoom_in,unused,0,2,holdout")  # a split no list names: ignored
    (root / "k.csv").write_text("\n".join(lines) + "\n")
    return root / "k.csv"


def test_kinetics_csv_trimmed_files(tmp_path):
    csv = _kinetics(tmp_path)
    ds = _build("kinetics_csv", path=str(csv), frames_per_clip=4, size=16, val_fraction=0.0)
    assert ds.classnames == ["move_left", "zoom_in"] and len(ds.train) == 6 and len(ds.test) == 2
    s = ds.test[0]
    assert tuple(s.media.shape) == (4, 3, 16, 16) and s.id.endswith("k.csv:8")
    assert ds.classnames[s.label] == "zoom_in" and s.meta["frames"] == [2, 6, 10, 14]


def test_kinetics_csv_clip_by_time(tmp_path):
    """Whole videos: frames come only from [time_start, time_end) of each file."""
    for k in range(4):
        _video(tmp_path / f"full{k}.mp4", "move_up", frames=40, seed=k)  # 5 s at 8 fps
    rows = ["label,youtube_id,time_start,time_end,split"]
    rows += [f"move_up,full{k},{k % 2 + 1},{k % 2 + 3},{'test' if k == 3 else 'train'}" for k in range(4)]
    rows.append("move_up,full0,6,8,train")  # window after the 5 s file ends
    (tmp_path / "k.csv").write_text("\n".join(rows) + "\n")
    kw = dict(path=str(tmp_path / "k.csv"), pattern="{youtube_id}.mp4", clip_by_time=True,
              frames_per_clip=4, sampling="uniform", size=16, val_fraction=0.0)
    with pytest.raises(DataError, match=r"k\.csv:6: time window starts at 6\.0 s"):
        _build("kinetics_csv", **kw)
    ds = _build("kinetics_csv", on_error="skip", **kw)
    assert ds.num_skipped == 1
    assert ds.test[0].meta["frames"] == [18, 22, 26, 30]  # 2-4 s = frames 16..31, uniform centres


def test_kinetics_csv_corrupted_file(tmp_path):
    csv = _kinetics(tmp_path, corrupt=True)
    with pytest.raises(DataError, match=r"k\.csv:10: .*bad_000000_000002\.mp4"):
        _build("kinetics_csv", path=str(csv), size=16)
    ds = _build("kinetics_csv", path=str(csv), size=16, on_error="skip", val_fraction=0.0)
    assert ds.num_skipped == 1 and "bad_000000_000002.mp4" in ds.skipped[0] and len(ds.train) == 6


def test_kinetics_csv_bad_rows_and_paths(tmp_path):
    (tmp_path / "k.csv").write_text("label,youtube_id,time_start\nx,y,1\n")
    with pytest.raises(DataError, match=r"k\.csv:1: header .* lacks column\(s\) \['time_end', 'split'\]"):
        _build("kinetics_csv", path=str(tmp_path / "k.csv"))
    (tmp_path / "k.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                    "a,../../etc/passwd,0,1,train\nb,z,5,2,train\n")
    with pytest.raises(DataError, match=r"k\.csv:2: video path .* points outside the root"):
        _build("kinetics_csv", path=str(tmp_path / "k.csv"), pattern="{youtube_id}")
    with pytest.raises(DataError, match=r"0 train and 0 test clips left \(2 skipped\)"):
        _build("kinetics_csv", path=str(tmp_path / "k.csv"), pattern="{youtube_id}", on_error="skip")


def test_video_actions_recipe_on_kinetics_csv(tmp_path):
    from modalab.experiment.runner import run

    csv = _kinetics(tmp_path / "k", corrupt=True)
    raw = yaml.safe_load((RECIPES / "video_actions.yaml").read_text())
    data = (f"data={{source: kinetics_csv, path: '{csv}', frames_per_clip: 4, size: 16, "
            "val_fraction: 0.0, on_error: skip}")  # the command-line form: the section replaced whole
    recipe = from_dict(raw, [data, "model.dim=16", "model.heads=2", "model.depth=1", "train.steps=2",
                             "train.batch_size=4", "run.progress=false", "eval.batch_size=4"])
    res = json.loads((run(recipe, tmp_path / "run") / "results.json").read_text())
    assert res["num_train"] == 6 and res["num_test"] == 2 and 0.0 <= res["top1"] <= 1.0


# ------------------------------------------------------------------------------ activitynet


def _activitynet(root: Path, corrupt: bool = False, frames_key: bool = False) -> Path:
    db = {}
    for k in range(6):
        _video(root / f"v_{k}.mp4", ("zoom_in", "flash")[k % 2], frames=32, seed=k)  # 4 s
        seg = {"segment(frames)": [8, 24]} if frames_key else {"segment": [1.0, 3.0]}
        db[f"{k}"] = {"subset": "validation" if k >= 4 else "training", "duration": 4.0, "fps": FPS,
                      "annotations": [{"label": ("zoom_in", "flash")[k % 2], **seg},
                                      {"label": "flash", "segment": [3.5, 9.0]}]}  # clipped to 4 s
    if corrupt:
        _corrupt(root / "v_bad.mp4")
        db["bad"] = {"subset": "training", "annotations": [{"label": "flash", "segment": [0, 1]}]}
    p = root / "anet.json"
    p.write_text(json.dumps({"version": "1.3", "database": db}))
    return p


def test_activitynet_json_segments_and_steps(tmp_path):
    p = _activitynet(tmp_path)
    ds = _build("activitynet_json", path=str(p), pattern="v_{video_id}.mp4", num_steps=8, size=16,
                val_fraction=0.0)
    assert ds.classnames == ["flash", "zoom_in"] and len(ds.train) == 4 and len(ds.test) == 2
    s = ds.test[0]
    assert tuple(s.media.shape) == (8, 3, 16, 16) and s.meta["seconds_per_step"] == pytest.approx(0.5)
    assert s.meta["segments"] == [{"label": 1, "action": "zoom_in", "start": 1.0, "end": 3.0},
                                  {"label": 0, "action": "flash", "start": 3.5, "end": 4.0}]
    # fps-aware: the same segments given in frames at the record's fps
    q = _activitynet(tmp_path / "frames", frames_key=True)
    ds2 = _build("activitynet_json", path=str(q), pattern="v_{video_id}.mp4", num_steps=8, size=16,
                 val_fraction=0.0)
    assert ds2.test[0].meta["segments"] == s.meta["segments"]
    raw = json.loads(q.read_text())
    raw["database"]["4"]["fps"] = 25
    q.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"database\['4'\]\.annotations\[0\]: annotation fps 25 differs"):
        _build("activitynet_json", path=str(q), pattern="v_{video_id}.mp4", num_steps=8, size=16)


def test_activitynet_json_corrupted_file(tmp_path):
    p = _activitynet(tmp_path, corrupt=True)
    kw = dict(path=str(p), pattern="v_{video_id}.mp4", num_steps=8, size=16, val_fraction=0.0)
    with pytest.raises(DataError, match=r"database\['bad'\]: .*v_bad\.mp4"):
        _build("activitynet_json", **kw)
    ds = _build("activitynet_json", on_error="skip", **kw)
    assert ds.num_skipped == 1 and "v_bad.mp4" in ds.skipped[0] and len(ds.train) == 4


def test_video_localization_recipe_on_activitynet_json(tmp_path):
    from modalab.experiment.runner import run

    p = _activitynet(tmp_path / "a", corrupt=True)
    raw = yaml.safe_load((RECIPES / "video_localization.yaml").read_text())
    raw["data"] = {"source": "activitynet_json", "path": str(p), "pattern": "v_{video_id}.mp4",
                   "num_steps": 8, "size": 16, "val_fraction": 0.0, "on_error": "skip"}
    recipe = from_dict(raw, ["model.dim=16", "model.heads=2", "model.depth=1", "train.steps=2",
                             "train.batch_size=2", "run.progress=false", "eval.batch_size=2"])
    res = json.loads((run(recipe, tmp_path / "run") / "results.json").read_text())
    assert res["num_train"] == 4 and res["num_test"] == 2 and res["num_gt_segments"] == 4
    assert 0.0 <= res["mAP@0.5"] <= 1.0


# ---------------------------------------------------------------------------------- msr-vtt


def _msrvtt(root: Path, corrupt: bool = False) -> Path:
    videos, sentences = [], []
    for k in range(6):
        _video(root / f"video{k}.mp4", "rotate", seed=k)
        videos.append({"video_id": f"video{k}", "split": "test" if k >= 4 else "train", "id": k})
        sentences += [{"video_id": f"video{k}", "caption": f"clip {k} caption {j}", "sen_id": 3 * k + j}
                      for j in range(3)]
    if corrupt:
        _corrupt(root / "video9.mp4")
        videos.append({"video_id": "video9", "split": "train", "id": 9})
        sentences.append({"video_id": "video9", "caption": "broken"})
    p = root / "videodatainfo.json"
    p.write_text(json.dumps({"videos": videos, "sentences": sentences}))
    return p


def test_msrvtt_json_captions(tmp_path):
    p = _msrvtt(tmp_path)
    ds = _build("msrvtt_json", path=str(p), frames_per_clip=4, size=16, val_fraction=0.0)
    assert len(ds.train) == 4 and len(ds.test) == 2 and ds.classnames is None
    s = ds.test[0]
    assert s.text == "clip 4 caption 0" and len(s.meta["captions"]) == 3
    assert tuple(s.media.shape) == (4, 3, 16, 16) and s.meta["record"]["id"] == 4
    assert {ds.train[0].text for _ in range(20)} <= set(ds.train[0].meta["captions"])
    assert "clip 0 caption 2" in ds.texts and "clip 4 caption 0" not in ds.texts  # test captions unseen


def test_msrvtt_json_corrupted_file_and_bad_sentence(tmp_path):
    p = _msrvtt(tmp_path, corrupt=True)
    with pytest.raises(DataError, match=r"videos\[6\] \(video9\): .*video9\.mp4"):
        _build("msrvtt_json", path=str(p), size=16)
    ds = _build("msrvtt_json", path=str(p), size=16, on_error="skip", val_fraction=0.0)
    assert ds.num_skipped == 1 and "video9.mp4" in ds.skipped[0] and len(ds.train) == 4
    raw = json.loads(p.read_text())
    raw["sentences"].append({"video_id": "video77", "caption": "orphan"})
    p.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"sentences\[19\]: needs a known 'video_id'"):
        _build("msrvtt_json", path=str(p), size=16)
