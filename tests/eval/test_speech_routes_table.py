"""scripts/speech_routes_table.py: means over seeds and the paired t-test of routes, on hand-made results."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("speech_routes_table", ROOT / "scripts" / "speech_routes_table.py")
table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table)


def _run(tmp: Path, seed: int, stress: dict[str, float]) -> Path:
    d = tmp / f"s{seed}"
    d.mkdir()
    res = {"asr/seq_acc": 0.9}
    for route in table.ROUTES:
        res.update({f"{route}/{k}": 0.5 for k in table.KEYS})
        res[f"{route}/stress_acc"] = stress[route]
    res["cascade/word_acc|asr_ok"] = "nan"  # NaN as the runner may store it
    (d / "results.json").write_text(json.dumps(res))
    (d / "config.yaml").write_text(f"run:\n  seed: {seed}\n")
    return d


def test_table_means_and_paired_test(tmp_path, capsys):
    runs = [_run(tmp_path, s, {"cascade": 0.3 + 0.01 * s, "e2e": 0.6 + 0.02 * s, "e2e_prosody": 0.6})
            for s in range(3)]
    table.main([str(r) for r in runs])
    out = capsys.readouterr().out
    assert "seeds [0, 1, 2]" in out
    assert "| e2e | 0.500" in out and "| cascade | 0.500" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("stress_acc: e2e - cascade"))
    # differences 0.30, 0.31, 0.32: mean +0.310
    assert "+0.310" in line and "MDE=" in line
    assert table.load(runs, "test")[0]["seed"] == 0
    with pytest.raises(SystemExit):
        table.load([tmp_path / "missing"], "test")
