"""run.loggers: [mlflow] writes params, the metric series of metrics.jsonl, and the artefacts to an
MLflow store, read back with MLflow's own client; a missing mlflow is a console warning."""

import json
import sys
from pathlib import Path

import pytest

from modalab.cli import main
from modalab.experiment.loggers import Loggers, flatten, mlflow_name
from modalab.experiment.rundir import RunDir

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml")
TINY = [
    "model.vision.width=16", "model.vision.depth=1", "model.text.width=16", "model.text.depth=1",
    "model.embed_dim=16", "train.steps=4", "train.batch_size=32", "train.log_every=1",
    "train.eval_every=2", "train.num_threads=1", "run.progress=false", "optim.warmup_steps=1",
]


def test_mlflow_store_holds_params_metric_series_and_artefacts(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # the default store is ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    assert main(["run", RECIPE, "--out", str(out), "run.loggers=[jsonl,mlflow]", *TINY]) == 0
    assert (tmp_path / "mlruns").is_dir()
    info = json.loads((out / "run.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert client.get_experiment(run.info.experiment_id).name == "clip_digits"
    # params: the resolved recipe, flattened
    assert run.data.params["train.steps"] == "4" and run.data.params["model.embed_dim"] == "16"
    assert run.data.params["loss.name"] == "info_nce"
    # metrics: the same series as metrics.jsonl, step by step
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "lr", "grad_norm", "val_zeroshot_top1", "val_image_to_text_R@1"):
        logged = {r["step"]: r[key] for r in recs if key in r and isinstance(r.get("step"), int)
                  and r.get("event") != "final"}  # the final results go to MLflow as final/<key>
        hist = {m.step: m.value for m in client.get_metric_history(run.info.run_id, mlflow_name(key))}
        assert logged and hist == pytest.approx(logged), key
    results = json.loads((out / "results.json").read_text())
    final = client.get_metric_history(run.info.run_id, "final/zeroshot_top1")
    assert [m.value for m in final] == pytest.approx([results["zeroshot_top1"]])
    # artefacts: results.json and report.html, byte for byte
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"results.json", "report.html"}
    local = client.download_artifacts(run.info.run_id, "results.json", str(tmp_path / "dl"))
    assert Path(local).read_text() == (out / "results.json").read_text()


def test_mlflow_respects_the_tracking_uri(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = tmp_path / "elsewhere"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    rd = RunDir.create(tmp_path / "r", str(tmp_path), "x")
    rd.write_run_info({"name": "x"})
    sinks = Loggers(rd, ["mlflow"], "exp", {"train": {"steps": 3}, "run": {"seed": 1}})
    sinks.log({"step": 1, "loss": 2.5, "event": "x", "flag": True, "note": "text"})
    sinks.log({"warning": "no step: not a metric"})
    sinks.finish()
    assert store.is_dir() and not (tmp_path / "mlruns").exists()
    client = MlflowClient(tracking_uri=store.as_uri())
    run = client.get_run(rd.read_run_info()["mlflow"]["run_id"])
    assert run.data.params == {"train.steps": "3", "run.seed": "1"}
    assert run.data.metrics == {"loss": 2.5}  # numbers only; booleans and texts are not metrics


def test_missing_mlflow_is_a_console_warning(tmp_path, monkeypatch, capsys):
    for mod in ("mlflow", "mlflow.entities", "mlflow.tracking"):
        monkeypatch.setitem(sys.modules, mod, None)  # import now fails
    rd = RunDir.create(tmp_path / "r", str(tmp_path), "x")
    sinks = Loggers(rd, ["jsonl", "mlflow"], "exp", {})
    sinks.log({"step": 1, "loss": 1.0})
    assert "pip install mlflow-skinny" in capsys.readouterr().err
    assert "mlflow-skinny is not installed" in rd.read_metrics()[0]["warning"]


def test_names_and_params_flatten():
    assert mlflow_name("image_to_text_R@1") == "image_to_text_R_at_1"
    assert mlflow_name("monitor/sim_q0.5") == "monitor/sim_q0.5"
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": "1", "a.c": "[1, 2]", "d": "{}"}
