"""benchmarks/unified_seeds_table.py on hand-made run directories: every number checked."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "unified_seeds_table.py"


def _module():
    spec = importlib.util.spec_from_file_location("unified_seeds_table", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(root: Path, seed: int, cm_ar: float, cm_diff: float) -> Path:
    run = root / f"s{seed}"
    (run / "artifacts").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"run": {"seed": seed}, "eval": {"select_confidence": 0.9}}))
    sweep = {"fid_floor_train_vs_val": 8.0,
             "ar": {"rows": [{"temperature": 0.5, "n": 270, "class_match": 0.904, "fid": 9.0},
                             {"temperature": 0.2, "n": 270, "class_match": 0.97, "fid": 12.0}], "chosen": 1},
             "diffusion": {"rows": [{"guidance": 1.0, "guidance_interval": None, "n": 270,
                                     "class_match": 0.95, "fid": 7.0}], "chosen": 0}}
    (run / "artifacts" / "val_sweep.json").write_text(json.dumps(sweep))
    res = {"test_understand_accuracy": 0.97, "test_generate_class_match_ar": cm_ar,
           "test_generate_class_match_diffusion": cm_diff, "test_generate_fid_ar": 20.0,
           "test_generate_fid_diffusion": 10.0, "test_fid_real_train_same_n": 5.0,
           "test_generate_precision_ar": 0.9, "test_generate_recall_ar": 0.7,
           "test_generate_precision_diffusion": 0.8, "test_generate_recall_diffusion": 0.9,
           "test_sample_seconds_per_image_ar": 0.001, "test_sample_seconds_per_image_diffusion": 0.1,
           "test_chosen_ar_temperature": 0.2, "test_chosen_guidance": 1.0}
    (run / "results.json").write_text(json.dumps(res))
    return run


def test_tables_from_run_directories(tmp_path, capsys):
    mod = _module()
    runs = [_run(tmp_path, 5, 0.88, 0.95), _run(tmp_path, 6, 0.94, 0.99)]
    mod.main([str(r) for r in runs])
    out = capsys.readouterr().out
    assert "t 0.5: 0.904 (0.879) 9.0" in out  # Wilson at 0.9 confidence, n = 270 (normal approx.: 0.881)
    assert "| 5 | ar |" in out and "temperature 0.2 |" in out and "guidance 1 |" in out
    assert "none cleared" not in out  # 0.97 on 270 and 0.95 on 270 clear 0.9 with their bounds
    ar = next(line for line in out.splitlines() if line.startswith("| class-match AR |"))
    assert ar == "| class-match AR | 0.880 | 0.940 | 0.910 +/- 0.042 | 1/2 |"
    ratio = next(line for line in out.splitlines() if line.startswith("| FID / floor: AR |"))
    assert "| 4.00 | 4.00 |" in ratio
    sweep_file = runs[0] / "artifacts" / "val_sweep.json"
    sweep = json.loads(sweep_file.read_text())
    sweep["ar"]["rows"][1]["class_match"] = 0.91  # its bound (0.88) misses 0.9: the rule's fallback
    sweep_file.write_text(json.dumps(sweep))
    mod.main([str(runs[0])])
    assert "temperature 0.2 (none cleared the bar) |" in capsys.readouterr().out


def test_a_run_without_the_sweep_keys_is_named(tmp_path):
    mod = _module()
    run = _run(tmp_path, 0, 0.9, 0.9)
    res = json.loads((run / "results.json").read_text())
    del res["test_chosen_ar_temperature"]
    (run / "results.json").write_text(json.dumps(res))
    with pytest.raises(KeyError, match="test_chosen_ar_temperature"):
        mod.main([str(run)])
    with pytest.raises(SystemExit, match="no results.json"):
        mod.main([str(tmp_path / "missing")])
