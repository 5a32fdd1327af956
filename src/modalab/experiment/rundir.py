"""A run directory that explains itself.

```
runs/<name>-<timestamp>/
  config.yaml        the resolved recipe (every default filled in)
  run.json           command, overrides, recipe path and hash, seed, git commit, machine, times, status
  metrics.jsonl      one JSON record per logged step (append-only, flushed per line)
  checkpoints/       safetensors weights + trainer state (see train/checkpoint.py)
  artifacts/         data the report draws (similarity matrices, histograms), as JSON
  results.json       final metrics, sample counts, skipped inputs
  code.json          the modalab modules the run loaded, by hash, and package versions (code_record.py)
  reused.json        only in a run copied by ``sweep --reuse``: where from, and why (reuse.py)
  report.html        self-contained report with plots
```
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from modalab import __version__
from modalab.train.checkpoint import atomic_write_text


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, torch.Tensor):
        return _jsonable(v.item()) if v.numel() == 1 else v.tolist()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=cwd
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def git_dirty(cwd: Path | None = None) -> bool | None:
    """Whether tracked files differ from the commit (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, timeout=5, cwd=cwd)
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, out: Path | None, out_dir: str, name: str, exist_ok: bool = False) -> "RunDir":
        """A new run directory: ``out``, or ``out_dir/<name>-<timestamp>``.

        An existing ``out`` that already holds a run is an error unless ``exist_ok`` (resuming),
        so two runs never interleave their metrics.
        """
        if out is not None and (Path(out) / "run.json").exists() and not exist_ok:
            raise FileExistsError(
                f"{out} already holds a run (run.json exists); choose another --out, delete it, "
                f"or resume it"
            )
        if out is None:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            out = Path(out_dir) / f"{name}-{stamp}"
            n = 1
            while out.exists():
                out = Path(out_dir) / f"{name}-{stamp}-{n}"
                n += 1
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "artifacts").mkdir(exist_ok=True)
        return cls(out)

    # files -------------------------------------------------------------------------------
    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def write_config(self, yaml_text: str) -> None:
        atomic_write_text(self.path / "config.yaml", yaml_text)

    def write_run_info(self, info: dict[str, Any]) -> None:
        atomic_write_text(self.path / "run.json", json.dumps(_jsonable(info), indent=2))

    def read_run_info(self) -> dict[str, Any]:
        f = self.path / "run.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    def update_run_info(self, **kw: Any) -> None:
        info = self.read_run_info()
        info.update(kw)
        self.write_run_info(info)

    def drop_run_info(self, *keys: str) -> None:
        info = self.read_run_info()
        if any(k in info for k in keys):
            self.write_run_info({k: v for k, v in info.items() if k not in keys})

    def log(self, record: dict[str, Any]) -> None:
        with open(self.metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.is_file():
            return []
        out = []
        for line in self.metrics_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn last line after a kill
        return out

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_text(self.path / "results.json", json.dumps(_jsonable(results), indent=2))

    def read_results(self) -> dict[str, Any]:
        f = self.path / "results.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    def write_artifact(self, name: str, data: Any) -> None:
        atomic_write_text(self.path / "artifacts" / f"{name}.json", json.dumps(_jsonable(data)))

    def read_artifact(self, name: str) -> Any:
        f = self.path / "artifacts" / f"{name}.json"
        return json.loads(f.read_text()) if f.is_file() else None


class ReadOnlyRunDir(RunDir):
    """A run directory that is read but never written: what ranks other than 0 see, and what a
    task built only to inspect its initial weights (``modalab doctor``) is given."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def write_artifact(self, name: str, data: Any) -> None:
        pass

    def write_results(self, results: dict[str, Any]) -> None:
        pass

    def write_run_info(self, info: dict[str, Any]) -> None:
        pass

    def write_config(self, yaml_text: str) -> None:
        pass


def machine_info() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "modalab": __version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.is_available(),
    }


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
