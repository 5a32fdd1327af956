"""End-to-end smoke runs of the default recipe and of a manifest recipe on PNG files."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from modalab.cli import main
from modalab.config import load
from modalab.experiment.runner import run

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
RESULT_KEYS = [
    "zeroshot_top1", "zeroshot_top5",
    "image_to_text_R@1", "image_to_text_R@5", "image_to_text_R@10",
    "text_to_image_R@1", "text_to_image_R@5", "text_to_image_R@10",
    "image_to_text_mean_rank", "text_to_image_mean_rank",
    "num_train", "num_test", "num_skipped",
]


def test_default_recipe_smoke(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", str(RECIPES / "clip_digits.yaml"), "--out", str(out),
               "train.steps=20", "train.log_every=2", "train.eval_every=10", "run.progress=false"])
    assert rc == 0
    assert f"run directory: {out}" in capsys.readouterr().out
    # every file exists and parses
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["steps"] == 20
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m and "event" not in m]
    assert len(losses) == 10
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses  # the loss falls
    assert any("val_zeroshot_top1" in m for m in metrics)
    results = json.loads((out / "results.json").read_text())
    for k in RESULT_KEYS:
        assert k in results, k
    assert results["num_train"] + results["num_val"] + results["num_test"] == 1797  # val: 10% of train
    assert results["num_val"] == 135 and results["num_skipped"] == 0
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished"
    ckpts = sorted((out / "checkpoints").iterdir())
    assert ckpts and (ckpts[-1] / "model.safetensors").is_file()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4  # loss, logit scale, lr, heatmap, ...


def write_digit_manifest(root: Path, n: int = 120, missing: int = 0) -> Path:
    from sklearn.datasets import load_digits

    from modalab.data.sources.digits import NAMES

    d = load_digits()
    (root / "img").mkdir(parents=True)
    lines = []
    for i in range(n):
        arr = (d.images[i] / 16.0 * 255).astype(np.uint8)
        name = f"img/{i}.png"
        if i >= missing:
            Image.fromarray(arr).resize((16, 16)).save(root / name)
        label = NAMES[d.target[i]]
        lines.append(json.dumps({"image": name, "text": f"a handwritten {label}", "label": label}))
    path = root / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_manifest_recipe_trains(tmp_path):
    manifest = write_digit_manifest(tmp_path / "data")
    recipe = load(RECIPES / "clip_manifest_example.yaml",
                  [f"data.path={manifest}", "train.steps=6", "train.batch_size=16", "run.progress=false"])
    out = run(recipe, tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    assert res["num_train"] == 90 and res["num_test"] == 30 and "zeroshot_top1" in res


def test_manifest_missing_image_error_and_skip(tmp_path):
    from modalab.data.dataset import DataError

    manifest = write_digit_manifest(tmp_path / "data", n=40, missing=2)
    over = [f"data.path={manifest}", "train.steps=2", "train.batch_size=8", "run.progress=false"]
    with pytest.raises(DataError, match=r"manifest.jsonl:1: image file not found: .*img/0.png"):
        run(load(RECIPES / "clip_manifest_example.yaml", over), tmp_path / "a")
    out = run(load(RECIPES / "clip_manifest_example.yaml", [*over, "data.on_error=skip"]), tmp_path / "b")
    res = json.loads((out / "results.json").read_text())
    assert res["num_skipped"] == 2 and res["num_train"] + res["num_test"] == 38
    assert "manifest.jsonl:2: image file not found" in res["skipped"][1]


def test_manifest_csv_and_bad_rows(tmp_path):
    from modalab.data.dataset import DataError
    from modalab.data.sources.manifest import parse_rows

    (tmp_path / "a.png").write_bytes(b"")
    csv = tmp_path / "m.csv"
    csv.write_text("image,text,label\na.png,a cat,cat\n")
    rows = parse_rows(csv, tmp_path)
    assert rows[0].line == 2 and rows[0].label == "cat"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.png", "text": "x"}\n{"image": "../../etc/passwd", "text": "x"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: image path '../../etc/passwd' leaves the data root"):
        parse_rows(bad, tmp_path)
    bad.write_text('{"image": "a.png"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: missing or empty 'text'"):
        parse_rows(bad, tmp_path)
    bad.write_text('not json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: not valid JSON"):
        parse_rows(bad, tmp_path)


def test_existing_run_directory_is_not_reused(tmp_path):
    from modalab.experiment.rundir import RunDir

    rd = RunDir.create(tmp_path / "r", "runs", "x")
    rd.write_run_info({"status": "finished"})
    with pytest.raises(FileExistsError, match="already holds a run"):
        RunDir.create(tmp_path / "r", "runs", "x")
    assert RunDir.create(tmp_path / "r", "runs", "x", exist_ok=True).path == tmp_path / "r"


def test_heatmap_subset_shows_every_class():
    import torch

    from modalab.tasks.contrastive import heatmap_subset

    labels = torch.tensor([3, 1, 1, 0, 2, 3, 0, 2, 1, 3])
    idx = heatmap_subset(labels, 10, 8)
    assert labels[idx].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert heatmap_subset(None, 10, 5).tolist() == [0, 2, 4, 6, 8]
