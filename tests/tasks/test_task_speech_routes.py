"""recipes/speech_cascade_vs_e2e.yaml end to end at smoke size: all three routes scored on test and val."""

import json
from pathlib import Path

from modalab.config import load
from modalab.experiment.runner import run

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SMOKE = ["run.progress=false", "train.num_threads=1", "train.steps=3", "train.batch_size=4", "data.n_speakers=4",
         "data.test_speakers=1", "data.per_speaker=4", "data.val_fraction=0.3", "model.encoder.dim=16",
         "model.encoder.depth=1", "model.encoder.n_mels=16", "model.decoder.dim=16", "model.decoder.depth=1"]


def test_speech_routes_recipe_runs(tmp_path):
    out = run(load(RECIPES / "speech_cascade_vs_e2e.yaml", SMOKE), tmp_path / "r")
    res = json.loads((out / "results.json").read_text())
    assert res["num_test"] == 4 and res["num_train"] + res["num_val"] == 12 and res["num_val"] >= 4
    for route in ("cascade", "e2e", "e2e_prosody"):
        for key in ("word_acc", "digit_acc", "mode_acc", "stress_acc", "prosody_acc", "all_acc"):
            assert 0.0 <= res[f"{route}/{key}"] <= 1.0, (route, key)
            assert 0.0 <= res[f"val_{route}/{key}"] <= 1.0, (route, key)
        assert res[f"{route}/n|asr_ok"] + res[f"{route}/n|asr_err"] == 4
    assert 0.0 <= res["asr/seq_acc"] <= 1.0 and res["asr/wer"] >= 0.0
    assert set(res["answer_examples"]) == {"cascade", "e2e", "e2e_prosody"}
    assert not set(res["speakers"]["test"]) & set(res["speakers"]["train"])
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/asr_ctc" in r and "loss/e2e_prosody" in r for r in logs)
