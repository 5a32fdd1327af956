"""An embedded results store: SQLite (stdlib ``sqlite3``, WAL, no server) indexing run directories.

The run directories are the truth; the store is an index over them that ``compare``, ``report``
and ``doctor`` query, and it can always be rebuilt from them (:func:`rebuild`). Tables::

    runs          one row per run directory: sweep, arm, seed, recipe, recipe hash, overrides,
                  git commit, machine, start/end, status, swept params, resolved config
    final_metrics (run_id, key, value)          numeric entries of results.json
    step_metrics  (run_id, step, key, value)    numeric entries of metrics.jsonl records

WAL journaling plus a busy timeout make several readers and writers safe; each run is indexed in
one transaction (delete its rows, insert them again), so re-indexing is idempotent.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from modalab.experiment.rundir import RunDir

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, sweep TEXT, arm TEXT, seed INTEGER, name TEXT, recipe TEXT,
  recipe_hash TEXT, overrides TEXT, git_commit TEXT, machine TEXT, started TEXT, ended TEXT,
  status TEXT, params TEXT, config TEXT);
CREATE TABLE IF NOT EXISTS final_metrics (
  run_id TEXT, key TEXT, value REAL, PRIMARY KEY (run_id, key));
CREATE TABLE IF NOT EXISTS step_metrics (run_id TEXT, step INTEGER, key TEXT, value REAL);
CREATE INDEX IF NOT EXISTS step_by_run_key ON step_metrics (run_id, key, step);
CREATE INDEX IF NOT EXISTS runs_by_sweep ON runs (sweep, arm, seed);
"""


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    if v in ("nan", "inf", "-inf"):  # rundir writes non-finite floats as strings
        return float(v)
    return None


class Store:
    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self.db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # writing ------------------------------------------------------------------------------
    def index_run(
        self, path: Path, sweep: str | None = None, arm: str | None = None, params: dict | None = None
    ) -> str:
        """(Re)index one run directory; return its run id (the resolved path)."""
        rd = RunDir(Path(path))
        info = rd.read_run_info()
        run_id = str(Path(path).resolve())
        cfg_f = rd.path / "config.yaml"
        row = (
            run_id, sweep, arm or info.get("name") or rd.path.name, info.get("seed"), info.get("name"),
            info.get("recipe"), info.get("recipe_hash"), json.dumps(info.get("overrides", [])),
            info.get("git_commit"), json.dumps(info.get("machine", {}), sort_keys=True),
            info.get("started"), info.get("ended"), info.get("status"),
            json.dumps(params or {}, sort_keys=True), cfg_f.read_text() if cfg_f.is_file() else None,
        )
        finals = [(run_id, k, x) for k, v in rd.read_results().items() if (x := _num(v)) is not None]
        steps = [
            (run_id, int(rec["step"]), k, x)
            for rec in rd.read_metrics()
            if "step" in rec and "event" not in rec
            for k, v in rec.items()
            if k != "step" and (x := _num(v)) is not None
        ]
        with self.db:  # one transaction
            for table in ("runs", "final_metrics", "step_metrics"):
                self.db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            self.db.execute(f"INSERT INTO runs VALUES ({','.join('?' * len(row))})", row)
            self.db.executemany("INSERT INTO final_metrics VALUES (?,?,?)", finals)
            self.db.executemany("INSERT INTO step_metrics VALUES (?,?,?,?)", steps)
        return run_id

    def index_sweep(self, root: Path) -> list[str]:
        """Index every started run of a sweep directory (its sweep.json lists them)."""
        plan = json.loads((Path(root) / "sweep.json").read_text())
        params = {a["name"]: a.get("params", {}) for a in plan["arms"]}
        ids = []
        for r in plan["runs"]:
            p = Path(root) / r["dir"]
            if (p / "run.json").is_file():
                ids.append(self.index_run(p, str(Path(root).resolve()), r["arm"], params.get(r["arm"])))
        return ids

    # reading ------------------------------------------------------------------------------
    def runs(self, sweep: str | None = None) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT * FROM runs" + (" WHERE sweep = ?" if sweep else "") + " ORDER BY sweep, arm, seed, run_id",
            (sweep,) if sweep else (),
        )
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def final(self, metric: str, run_ids: Iterable[str] | None = None) -> dict[str, float]:
        rows = self.db.execute("SELECT run_id, value FROM final_metrics WHERE key = ?", (metric,)).fetchall()
        keep = set(run_ids) if run_ids is not None else None
        return {r: v for r, v in rows if keep is None or r in keep}

    def curve(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return self.db.execute(
            "SELECT step, value FROM step_metrics WHERE run_id = ? AND key = ? ORDER BY step",
            (run_id, key),
        ).fetchall()

    def dump(self) -> dict[str, list[tuple]]:
        """Every table's rows in a canonical order (for equality checks)."""
        out = {}
        for table in ("runs", "final_metrics", "step_metrics"):
            rows = self.db.execute(f"SELECT * FROM {table}").fetchall()
            out[table] = sorted(rows, key=lambda r: tuple("" if x is None else str(x) for x in r))
        return out


def store_path(root: Path) -> Path:
    return Path(root) / "results.sqlite"


def rebuild(db_path: Path, sweeps: Iterable[Path] = (), runs: Iterable[Path] = ()) -> Store:
    """Delete the store at ``db_path`` and index ``sweeps`` and ``runs`` again from their files."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    store = Store(db_path)
    for s in sweeps:
        store.index_sweep(Path(s))
    for r in runs:
        store.index_run(Path(r))
    return store
