"""Where a run's records go: ``run.loggers: [jsonl, tensorboard, mlflow]``.

- ``jsonl``: metrics.jsonl in the run directory. Always written (the report, doctor, store and
  sweeps read it); listing it is allowed.
- ``tensorboard``: scalars under ``<run>/tensorboard/`` (``tensorboard --logdir runs``).
- ``mlflow``: an MLflow run in ``$MLFLOW_TRACKING_URI``, else in a local file store ``./mlruns``
  (experiment = ``run.name``, run name = the run directory's name). params = the resolved recipe,
  flattened (``train.steps``); metrics = the same series as metrics.jsonl (MLflow forbids ``@`` in
  names, so ``image_to_text_R@1`` is ``image_to_text_R_at_1``); the final results at the last step;
  artefacts = results.json and report.html.

An optional logger whose package is missing is a warning on the console and in metrics.jsonl,
never a silent no-op. Only rank 0 logs.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from modalab.experiment.rundir import RunDir

NAMES = ("jsonl", "tensorboard", "mlflow")


def _numeric(rec: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in rec.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def mlflow_name(key: str) -> str:
    """A metric name MLflow accepts (alphanumerics, ``_ - . / : `` and space)."""
    return re.sub(r"[^\w\-./: ]", "_", key.replace("@", "_at_"))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"steps": 2}}`` -> ``{"train.steps": "2"}`` (lists stay one value)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


class TensorBoardLogger:
    def __init__(self, rd: RunDir) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(str(rd.path / "tensorboard"))

    def log(self, rec: dict[str, Any]) -> None:
        step = rec.get("step")
        if isinstance(step, int):
            for k, v in _numeric(rec).items():
                self.writer.add_scalar(k, v, step)
            self.writer.flush()

    def finish(self, rd: RunDir, status: str) -> None:
        self.writer.close()


class MLflowLogger:
    def __init__(self, rd: RunDir, experiment: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # MLflow's own default folder; its file store needs this opt-in since MLflow 3
            uri = Path("mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(exp_id, run_name=rd.path.name, tags={
            "modalab.run_dir": str(rd.path.resolve())}).info.run_id
        items = [Param(k[:250], v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])
        self.last_step = 0
        rd.update_run_info(mlflow={"tracking_uri": uri, "run_id": self.run_id})

    def log(self, rec: dict[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        step = rec.get("step")
        if not isinstance(step, int):
            return
        self.last_step = max(self.last_step, step)
        now = int(time.time() * 1000)
        metrics = [Metric(mlflow_name(k), v, now, step) for k, v in _numeric(rec).items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def finish(self, rd: RunDir, status: str) -> None:
        results = rd.read_results()
        if results:
            self.log({"step": self.last_step, **{f"final/{k}": v for k, v in results.items()}})
        for name in ("results.json", "report.html"):
            if (rd.path / name).is_file():
                self.client.log_artifact(self.run_id, str(rd.path / name))
        self.client.set_terminated(self.run_id, status)


_SINKS: list[Callable[[dict[str, Any]], None]] = []  # process-wide extra sinks (add_sink)


def add_sink(fn: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
    """Send every record of the runs in this process to ``fn`` too (e.g. Ray Tune's report, see
    experiment/ray_asha.py); returns the function that removes it."""
    _SINKS.append(fn)
    return lambda: _SINKS.remove(fn)


def _warn(rd: RunDir, text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)
    rd.log({"warning": text})


class Loggers:
    """metrics.jsonl plus the optional loggers a recipe asks for; ``log`` is the engine's sink."""

    def __init__(self, rd: RunDir, names: list[str], experiment: str, params: dict[str, Any],
                 main: bool = True) -> None:
        self.rd, self.main, self.extra = rd, main, []
        if not main:
            return
        for name in dict.fromkeys(names):
            if name == "jsonl":
                continue
            try:
                if name == "tensorboard":
                    self.extra.append(TensorBoardLogger(rd))
                elif name == "mlflow":
                    self.extra.append(MLflowLogger(rd, experiment, flatten(params)))
                else:
                    raise ValueError(f"run.loggers: unknown logger '{name}'; expected one of {', '.join(NAMES)}")
            except ImportError as e:
                pkg = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny"}[name]
                _warn(rd, f"run.loggers has '{name}' but {pkg} is not installed ({e.name or e}); "
                          f"pip install {pkg} (or modalab[{name}]); logging to metrics.jsonl only")

    @property
    def log(self) -> Callable[[dict[str, Any]], None]:
        def log(rec: dict[str, Any]) -> None:
            self.rd.log(rec)
            for lg in self.extra:
                lg.log(rec)
            if self.main:
                for fn in _SINKS:
                    fn(rec)

        return log

    def finish(self, status: str = "FINISHED") -> None:
        """Close every logger (MLflow: final results, artefacts, run status)."""
        for lg in self.extra:
            lg.finish(self.rd, status)
        self.extra = []
