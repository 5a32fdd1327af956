"""What a run skipped reaches results.json and doctor; ``compare`` never merges two run
directories into one (arm, seed) silently."""

import json

import pytest
from fault_helpers import RECIPE, TINY

from modalab.cli import main
from modalab.data.sources.shards import write_digits_shards
from modalab.experiment.doctor import diagnose
from modalab.experiment.rundir import RunDir
from modalab.experiment.stats import DuplicateRunWarning, collect

SHARDS = str(RECIPE).replace("clip_digits.yaml", "clip_digits_shards.yaml")


def test_training_stream_skips_reach_results_and_doctor(tmp_path, capsys):
    """Before: a truncated training shard lost samples with num_skipped 0 in results.json."""
    idx = write_digits_shards(tmp_path / "d", size=200)
    for shard in idx["train"]["shards"]:  # every training shard loses its last two thirds
        bad = tmp_path / "d" / "train" / shard["name"]
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 3])
    over = [*TINY, "train.checkpoint_every=0", f"data.root={tmp_path / 'd' / 'train'}",
            f"data.eval_root={tmp_path / 'd' / 'test'}", "data.shuffle_buffer=0"]
    assert main(["run", SHARDS, "--out", str(tmp_path / "err"), *over]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "/train/shard-00000" in err and "corrupted shard" in err
    assert json.loads((tmp_path / "err" / "run.json").read_text())["status"] == "failed"
    run = tmp_path / "skip"
    assert main(["run", SHARDS, "--out", str(run), *over, "data.on_error=skip"]) == 0  # 12 x 32 samples
    res = json.loads((run / "results.json").read_text())
    assert res["num_skipped"] == len(res["skipped"]) >= 133  # each lost sample of each shard read
    assert all("corrupted shard" in s and s.endswith("lost") for s in res["skipped"])
    assert f"{res['num_skipped']} input(s) skipped" in (run / "report.html").read_text()
    found = [f for f in diagnose(run) if f.check == "skipped_inputs"]
    assert found and found[0].severity == "warning" and str(res["num_skipped"]) in found[0].message


def _fake_run(path, name, seed, value):
    rd = RunDir.create(path, "", name)
    rd.write_run_info({"name": name, "seed": seed, "status": "finished"})
    rd.write_results({"zeroshot_top1": value})
    return path


def test_compare_splits_duplicate_arm_seed_with_a_warning(tmp_path):
    """Before: two run directories of one recipe collapsed into one arm, one value lost."""
    a = _fake_run(tmp_path / "baseline", "clip_digits", 0, 0.80)
    b = _fake_run(tmp_path / "tweaked", "clip_digits", 0, 0.90)
    with pytest.warns(DuplicateRunWarning, match=r"seed 0 comes from 2 run directories .*baseline.*tweaked"):
        values, _ = collect([a, b], "zeroshot_top1")
    assert values == {"clip_digits [baseline]": {0: 0.80}, "clip_digits [tweaked]": {0: 0.90}}
    c = _fake_run(tmp_path / "other", "clip_digits", 1, 0.85)  # a different seed: no clash
    values, _ = collect([a, a, c], "zeroshot_top1")  # the same run given twice counts once
    assert values == {"clip_digits": {0: 0.80, 1: 0.85}}


def test_compare_cli_prints_the_warning(tmp_path, capsys):
    a = _fake_run(tmp_path / "x1", "r", 0, 0.5)
    b = _fake_run(tmp_path / "x2", "r", 0, 0.6)
    assert main(["compare", str(a), str(b), "--bootstrap", "100"]) == 0
    out = capsys.readouterr()
    assert "warning: compare: arm 'r' seed 0" in out.err and "r [x1]" in out.out and "r [x2]" in out.out
