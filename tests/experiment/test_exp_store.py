"""The SQLite results store: indexing run directories, WAL, and a rebuild equal to the original."""

import json
import sqlite3

from modalab.experiment.rundir import RunDir
from modalab.experiment.store import Store, rebuild, store_path


def make_sweep(root, arms=("a", "b"), seeds=(0, 1, 2)):
    plan = {"recipe": "r.yaml", "grid": {"loss.temperature": list(arms)}, "seeds": list(seeds), "overrides": [],
            "arms": [{"name": a, "overrides": [f"loss.temperature={a}"], "params": {"loss.temperature": a}}
                     for a in arms],
            "runs": [{"arm": a, "seed": s, "dir": f"{a}/seed{s}"} for a in arms for s in seeds]}
    root.mkdir(parents=True)
    (root / "sweep.json").write_text(json.dumps(plan))
    for i, a in enumerate(arms):
        for s in seeds:
            rd = RunDir.create(root / a / f"seed{s}", "", "x")
            rd.write_config("task: contrastive\n")
            rd.write_run_info({"name": "x", "seed": s, "overrides": [f"run.seed={s}"], "recipe_hash": "h",
                               "git_commit": "c", "machine": {"host": "m"}, "started": "t0", "ended": "t1",
                               "status": "finished"})
            for step in range(1, 4):
                rd.log({"step": step, "loss": 3.0 - step * 0.1 * (i + 1), "lr": 1e-3, "tau": 0.07})
            rd.log({"step": 3, "event": "final", "zeroshot_top1": 0.5})
            rd.write_results({"zeroshot_top1": 0.5 + 0.1 * i + 0.01 * s, "eval_match": "label",
                              "monitor_warnings": [], "logit_scale_at_clamp": False, "bad": "nan"})
    return root


def test_store_indexes_runs_and_rebuild_equals_original(tmp_path):
    root = make_sweep(tmp_path / "sw")
    db = store_path(root)
    st = Store(db)
    # indexed incrementally, one run at a time, some twice (as a resumed sweep does)
    plan = json.loads((root / "sweep.json").read_text())
    for r in plan["runs"]:
        st.index_run(root / r["dir"], str(root.resolve()), r["arm"], {"loss.temperature": r["arm"]})
    st.index_sweep(root)
    assert st.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    runs = st.runs(str(root.resolve()))
    assert len(runs) == 6 and {r["arm"] for r in runs} == {"a", "b"}
    assert runs[0]["git_commit"] == "c" and json.loads(runs[0]["params"]) == {"loss.temperature": "a"}
    finals = st.final("zeroshot_top1")
    assert sorted(round(v, 4) for v in finals.values()) == [0.5, 0.51, 0.52, 0.6, 0.61, 0.62]
    assert [s for s, _ in st.curve(runs[0]["run_id"], "loss")] == [1, 2, 3]  # the final event is not a step
    keys = {k for (k,) in st.db.execute("SELECT DISTINCT key FROM final_metrics")}
    assert "eval_match" not in keys and "logit_scale_at_clamp" in keys
    original = st.dump()
    st.close()

    db.unlink()  # deleted: rebuilt from the run directories alone
    rebuilt = rebuild(db, sweeps=[root])
    assert rebuilt.dump() == original
    rebuilt.close()


def test_two_writers_share_the_store(tmp_path):
    root = make_sweep(tmp_path / "sw", arms=("a",), seeds=(0, 1))
    db = tmp_path / "x.sqlite"
    s1, s2 = Store(db), Store(db)
    s1.index_run(root / "a/seed0", "sw", "a")
    s2.index_run(root / "a/seed1", "sw", "a")
    s1.index_run(root / "a/seed0", "sw", "a")  # re-indexing replaces, never duplicates
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
    assert con.execute("SELECT COUNT(*) FROM step_metrics").fetchone()[0] == 2 * 3 * 3
    s1.close(), s2.close(), con.close()
