"""`modalab doctor`: each check fires on a deliberately broken run and stays quiet on the default."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modalab.cli import main
from modalab.config import load
from modalab.experiment.doctor import diagnose
from modalab.experiment.rundir import RunDir
from modalab.experiment.runner import run

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TINY = ["train.batch_size=64", "model.vision.depth=1", "model.text.depth=1", "model.vision.width=32",
        "model.text.width=32", "train.log_every=2", "run.progress=false", "train.num_threads=1"]


def loud(findings):
    return [f for f in findings if f.severity in ("error", "warning")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("doctor")
    out = {}
    out["default"] = run(load(RECIPES / "clip_digits.yaml", [*TINY, "train.steps=30"]), root / "default")
    out["frozen"] = run(load(RECIPES / "clip_digits.yaml", [
        *TINY, "train.steps=4", "optim.param_groups=[{pattern: 'image_encoder.*', lr: 0.0}]"]), root / "frozen")
    return out


def test_quiet_on_the_default_recipe(runs):
    findings = diagnose(runs["default"])
    assert loud(findings) == [], [f.message for f in loud(findings)]
    assert main(["doctor", str(runs["default"])]) == 0


def test_low_temperature_is_an_error_with_exit_code(tmp_path, capsys):
    out = run(load(RECIPES / "clip_digits.yaml", [*TINY, "train.steps=2", "loss.temperature=0.001"]), tmp_path / "r")
    f = [x for x in diagnose(out) if x.check == "temperature"]
    assert f and f[0].severity == "error" and "0.001" in f[0].evidence
    assert main(["doctor", str(out)]) == 1
    text = capsys.readouterr().out
    assert "[ERROR] temperature" in text and "fix:" in text


def test_frozen_module_that_changes(runs, tmp_path):
    # lr 0 really froze the image encoder: the reconstructed step-0 weights equal the checkpoint
    assert not [f for f in diagnose(runs["frozen"]) if f.check in ("frozen_changed", "not_training")]
    broken = tmp_path / "broken"
    shutil.copytree(runs["frozen"], broken)
    from safetensors.torch import load_file, save_file

    ck = next((broken / "checkpoints").glob("step_*")) / "model.safetensors"
    w = load_file(str(ck))
    key = next(k for k in w if k.startswith("image_encoder.patch_embed") and k.endswith("weight"))
    w[key] += 0.01  # the "frozen" encoder changed
    save_file(w, str(ck))
    f = {x.check: x for x in diagnose(broken)}
    assert f["frozen_changed"].severity == "error"
    assert key in f["frozen_changed"].evidence


def test_modules_meant_to_train_that_never_change(runs, tmp_path):
    from modalab.experiment.doctor import RunView, check_frozen, initial_weights

    v = RunView(runs["default"])
    w0 = initial_weights(v)
    broken = tmp_path / "still"
    shutil.copytree(runs["default"], broken)
    from safetensors.torch import load_file, save_file

    ck = next((broken / "checkpoints").glob("step_*")) / "model.safetensors"
    w = load_file(str(ck))
    w["text_proj.weight"] = w0["text_proj.weight"].clone()  # as if it never trained
    save_file(w, str(ck))
    f = [x for x in check_frozen(RunView(broken)) if x.check == "not_training"]
    assert f and "text_proj.weight" in f[0].evidence


def test_collapse_nonfinite_spikes_and_loss_only_eval(runs, tmp_path):
    broken = tmp_path / "collapsed"
    shutil.copytree(runs["default"], broken)
    rd = RunDir(broken)
    res = rd.read_results()
    res.update({"monitor/erank_text": 1.0, "monitor/erank_text_frac": 1 / 64, "monitor/std_text_mean": 0.0})
    rd.write_results(res)  # constant text embeddings
    rd.log({"step": 31, "event": "non_finite", "loss": "nan", "grad_norm": "nan"})
    for s, loss in ((32, 2.0), (33, 2.0), (34, 2.0), (35, 2.0), (36, 2.0), (37, 9.0)):
        rd.log({"step": s, "loss": loss})
    f = {x.check: x for x in diagnose(broken)}
    assert f["collapse"].severity == "error" and "text" in f["collapse"].message
    assert f["non_finite"].severity in ("warning", "error") and "31" in f["non_finite"].evidence
    assert "37" in f["loss_spikes"].evidence
    only_loss = tmp_path / "loss_only"
    shutil.copytree(runs["default"], only_loss)
    RunDir(only_loss).write_results({"loss": 1.0, "num_train": 10})
    assert any(x.check == "eval_only_loss" for x in diagnose(only_loss))


def test_small_batch_and_false_negatives(tmp_path):
    over = [*TINY, "train.steps=2", "train.batch_size=4", "loss.mask_same_label=false"]
    out = run(load(RECIPES / "clip_digits.yaml", over), tmp_path / "r")
    f = {x.check: x for x in diagnose(out)}
    assert f["batch_vs_classes"].severity == "error" and "4" in f["batch_vs_classes"].evidence
    assert f["false_negatives"].severity == "info"
    masked = run(load(RECIPES / "clip_digits.yaml", over[:-1]), tmp_path / "masked")  # the default masks
    assert "false_negatives" not in {x.check for x in diagnose(masked)}


def test_leaked_test_split(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    (tmp_path / "img").mkdir()
    lines = []
    for i in range(80):
        arr = (d.images[i] / 16.0 * 255).astype(np.uint8)
        Image.fromarray(arr).resize((16, 16)).save(tmp_path / f"img/{i}.png")
        lines.append(f"img/{i}.png,a handwritten {d.target[i]},{d.target[i]},train")
    for i in range(20):  # the test split: copies of training images under other names
        shutil.copy(tmp_path / f"img/{i}.png", tmp_path / f"img/test_{i}.png")
        lines.append(f"img/test_{i}.png,a handwritten {d.target[i]},{d.target[i]},test")
    (tmp_path / "m.csv").write_text("image,text,label,split\n" + "\n".join(lines) + "\n")
    out = run(load(RECIPES / "clip_manifest_example.yaml", [
        *TINY, f"data.path={tmp_path / 'm.csv'}", "train.steps=2", "train.batch_size=16"]), tmp_path / "r")
    f = {x.check: x for x in diagnose(out)}
    assert f["leakage"].severity == "error"
    assert f["leakage"].message.startswith("20 of 20 test items")
