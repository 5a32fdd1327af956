"""``modalab sweep --reuse DIR``: take a finished run from another sweep instead of training it again.

Several claims share a baseline arm (the default recipe at the same steps and seeds): FLIP, NegCLIP
and the noise curve on digit scenes each compare against ``recipes/clip_scenes.yaml``. Training that
baseline once per sweep triples its cost. A run is reused only when training it again would give
the same run:

- its ``run.json`` says ``finished``, with ``results.json``, and the same seed;
- its ``config.yaml`` equals the job's resolved recipe, except for keys that cannot change a result
  (:data:`RESULT_NEUTRAL`: the run's name and output root, logging, checkpoint cadence, a render
  cache's size);
- every modalab module it had loaded is byte-identical in the modalab that would train it again, with
  the same numeric packages and CPU (its ``code.json``, experiment/code_record.py), and it ran on the
  same host, Python, torch and thread count (``run.json``'s ``machine``).

The run directory is copied (atomically: a temporary folder, then a rename; its checkpoints stay
behind, the results, curves and artifacts come along) and gets
``reused.json`` naming where it came from and why it qualified, so a reader of the sweep can see it.
Any doubt (a missing or unreadable file) means no reuse: the job trains as usual.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from modalab.experiment.code_record import CODE_FILE, code_differs
from modalab.experiment.rundir import machine_info, now_iso
from modalab.train.checkpoint import atomic_write_text

REUSED_FILE = "reused.json"
# (section, key) pairs that name, log or checkpoint a run without changing what it trains or measures
RESULT_NEUTRAL: tuple[tuple[str, str], ...] = (
    ("run", "name"), ("run", "out_dir"), ("run", "progress"), ("run", "loggers"), ("train", "log_every"),
    ("train", "checkpoint_every"), ("train", "keep_checkpoints"), ("train", "tensorboard"),
    ("data", "render_cache_mb"),
)
_MACHINE_KEYS = ("host", "platform", "python", "torch", "threads", "processor", "cuda")


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the result-neutral keys (a copy)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    for section, key in RESULT_NEUTRAL:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return out


@dataclass(frozen=True)
class Candidate:
    path: Path
    seed: int
    config: dict[str, Any]  # comparable(config.yaml)
    info: dict[str, Any]  # run.json
    code: dict[str, Any]  # code.json


def _candidate(run: Path) -> Candidate | None:
    try:
        info = json.loads((run / "run.json").read_text(encoding="utf-8"))
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        code = json.loads((run / CODE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if info.get("status") != "finished" or not (run / "results.json").is_file() or not isinstance(config, dict):
        return None
    if (run / REUSED_FILE).is_file():
        return None  # only runs trained where they are (a copy of a copy is not reused again)
    seed = config.get("run", {}).get("seed")
    return Candidate(run, seed, comparable(config), info, code) if isinstance(seed, int) else None


class Reuser:
    """Finished runs under ``roots`` (sweep directories or run directories) that a job may take."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.candidates: list[Candidate] = []
        for root in roots:
            root = Path(root)
            if not root.is_dir():
                raise FileNotFoundError(f"--reuse {root}: not a directory")
            runs = [root] if (root / "run.json").is_file() else sorted(p.parent for p in root.glob("*/seed*/run.json"))
            self.candidates += [c for c in map(_candidate, runs) if c is not None]

    def find(self, config: dict[str, Any], machine: dict[str, Any]) -> tuple[Candidate | None, str]:
        """The first candidate that ``config`` (a resolved recipe dict) would reproduce, and why or why not."""
        want, seed = comparable(config), config.get("run", {}).get("seed")
        why = f"no finished run with seed {seed} and this resolved recipe"
        for c in self.candidates:
            if c.seed != seed or c.config != want:
                continue
            theirs = c.info.get("machine", {})
            if any(theirs.get(k) != machine.get(k) for k in _MACHINE_KEYS):
                why = f"{c.path}: trained on another machine or software ({_machine_diff(theirs, machine)})"
                continue
            changed = code_differs(c.code)
            if changed:
                why = f"{c.path}: its code differs from this modalab's ({changed})"
                continue
            return c, f"same resolved recipe, seed, code and machine as {c.path}"
        return None, why

    def adopt(self, cand: Candidate, dest: Path, reason: str) -> None:
        """Copy ``cand``'s run directory to ``dest`` (which must not exist) and record where it came from."""
        tmp = dest.parent / f".{dest.name}.reuse-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(cand.path, tmp, ignore=shutil.ignore_patterns("checkpoints"))
        atomic_write_text(tmp / REUSED_FILE, json.dumps({
            "reused_from": str(cand.path.resolve()), "source_commit": cand.info.get("git_commit"),
            "reason": reason, "copied": now_iso()}, indent=2))
        tmp.rename(dest)


def take_reusable(plan: Any, todo: list[Any], roots: Iterable[Path], summary: Any) -> list[Any]:
    """``modalab sweep``'s use: copy in each job (of a sweep ``plan``, not started yet) that a finished run
    under ``roots`` reproduces, noting it in ``summary``; return the jobs left to train."""
    from modalab.config import load
    from modalab.experiment.store import Store, store_path
    from modalab.experiment.sweep import job_overrides

    reuser, left = Reuser(roots), []
    machine = {**machine_info(), "threads": 1}  # every job runs at one thread (job_command)
    for job in todo:
        if job.path.exists():  # a started run is resumed or redone, never replaced by a copy
            left.append(job)
            continue
        cand, why = reuser.find(load(plan.snapshot, job_overrides(plan, job)).to_dict(), machine)
        if cand is None:
            print(f"sweep: {job.label}: trains ({why})", file=sys.stderr)
            left.append(job)
            continue
        job.path.parent.mkdir(parents=True, exist_ok=True)
        reuser.adopt(cand, job.path, why)
        print(f"sweep: {job.label}: reused ({why})", file=sys.stderr)
        summary.reused.append(job.label)
        store = Store(store_path(plan.root))
        try:
            store.index_run(job.path, str(plan.root.resolve()), job.arm.name, job.arm.params)
        finally:
            store.close()
    return left


def _machine_diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    return ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in _MACHINE_KEYS if a.get(k) != b.get(k))
