"""What ``modalab doctor`` checks read (``RunView``) and what they return (``Finding``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modalab.experiment.rundir import RunDir

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass
class Finding:
    check: str
    severity: str  # error | warning | info
    message: str
    evidence: str
    fix: str


class RunView:
    """What the checks read, loaded once."""

    def __init__(self, path: Path) -> None:
        rd = RunDir(path)
        self.path = Path(path)
        self.info = rd.read_run_info()
        cfg_f = self.path / "config.yaml"
        self.config: dict[str, Any] = yaml.safe_load(cfg_f.read_text()) if cfg_f.is_file() else {}
        self.results = rd.read_results()
        self.metrics = rd.read_metrics()
        self.train = [m for m in self.metrics if "loss" in m and "event" not in m and "step" in m]

    def cfg(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def recipe(self) -> Any:
        from modalab.config import validate

        return validate(self.config)
